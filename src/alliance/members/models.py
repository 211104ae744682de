"""Member and MemberLink rows.

A member is one person across the whole alliance; each merchant that enrols them holds a
link (its own customer reference ↔ the member). A merchant sees only members linked to it.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel


class Member(SQLModel, table=True):
    __tablename__ = "members"

    id: int | None = Field(default=None, primary_key=True)
    member_number: str
    phone: str
    name: str | None = None
    birthday: date | None = None
    status: str = "active"
    created_at: datetime | None = None


class MemberLink(SQLModel, table=True):
    __tablename__ = "member_links"

    tenant_id: int = Field(primary_key=True, foreign_key="tenants.id")
    member_id: int = Field(primary_key=True, foreign_key="members.id")
    external_ref: str
    created_at: datetime | None = None

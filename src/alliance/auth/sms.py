"""Sending one-time sign-in codes by SMS, behind one small interface.

`SmsSender` is what a gateway adapter implements (an Aliyun, Tencent Cloud or carrier client
lives outside this package and is named in ``ALLIANCE_SMS_SENDER`` as ``package.module:factory``;
the factory takes the settings). Two senders ship: ``log`` writes the message to the log (the
demo and development: the code is read from the server's output) and ``memory`` keeps it in a
list (tests read the code from there).
"""

from __future__ import annotations

import importlib
from collections import deque
from typing import Protocol

import structlog

from alliance.config import Settings

log = structlog.get_logger("alliance.sms")
MEMORY_OUTBOX_SIZE = 1000


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None:
        """Deliver ``text`` to ``phone`` (E.164); raise on failure."""


class LogSmsSender:
    """Writes each message to the log (the phone is masked there, the code is not)."""

    async def send(self, phone: str, text: str) -> None:
        log.info("sms", phone=phone, text=text)


class MemorySmsSender:
    """Keeps the latest messages in memory, newest last: for tests."""

    def __init__(self) -> None:
        self.outbox: deque[tuple[str, str]] = deque(maxlen=MEMORY_OUTBOX_SIZE)

    async def send(self, phone: str, text: str) -> None:
        self.outbox.append((phone, text))

    def last_to(self, phone: str) -> str | None:
        return next((text for to, text in reversed(self.outbox) if to == phone), None)


def sms_sender_from_settings(settings: Settings) -> SmsSender | None:
    """The configured sender; None turns phone sign-in off (no sender outside demo mode)."""
    name = settings.sms_sender or ("log" if settings.demo else None)
    if name is None:
        return None
    if name == "log":
        return LogSmsSender()
    if name == "memory":
        return MemorySmsSender()
    module_name, sep, attribute = name.partition(":")
    if not sep:
        raise ValueError(f"ALLIANCE_SMS_SENDER must be log, memory or package.module:factory, not {name!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    sender: SmsSender = factory(settings)
    return sender

"""The one error type domain functions raise for bad input or a refused operation.

The GraphQL layer turns it into a ``userErrors`` entry; raising it inside a database
transaction rolls the transaction back, so a refused operation never leaves a partial write.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refusal the caller can act on: a stable ``code``, the input ``field`` at fault, a message."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        assert code.isupper() and " " not in code, f"error codes are SCREAMING_SNAKE: {code!r}"
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class NotFound(DomainError):
    """The thing does not exist *for this caller* (row-level security hides it or it is absent)."""

    def __init__(self, what: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(code or f"{what.upper()}_NOT_FOUND", f"{what.replace('_', ' ')} not found", field)

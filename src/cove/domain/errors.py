"""Domain errors. Each surface maps them to its own wire shape in one helper."""

from __future__ import annotations


class CoveError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(CoveError):
    status, code = 400, "INVALID_REQUEST"


class Unauthorized(CoveError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(CoveError):
    status, code = 403, "FORBIDDEN"


class NotFound(CoveError):
    status, code = 404, "NOT_FOUND"


class Conflict(CoveError):
    status, code = 409, "ALREADY_EXISTS"


class Gone(CoveError):
    status, code = 410, "GONE"


class LimitExceeded(CoveError):
    status, code = 422, "SANDBOX_LIMIT_EXCEEDED"


class PaymentRequired(CoveError):
    """The workspace's prepaid balance does not cover the price; nothing was done."""

    status, code = 402, "PAYMENT_REQUIRED"

    def __init__(self, message: str, *, price: str, balance: str, action: str) -> None:
        super().__init__(message)
        self.details = {"price": price, "currency": "USD", "balance": balance, "action": action}


class RateLimited(CoveError):
    status, code = 429, "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # whole seconds, sent as Retry-After
        self.details = {"retryAfter": retry_after}


class NotReady(CoveError):
    status, code = 503, "NOT_READY"


class Unavailable(CoveError):
    """The platform cannot serve the request right now (a runtime failure, said as such)."""

    status, code = 503, "SANDBOX_UNAVAILABLE"

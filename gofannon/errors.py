"""One error hierarchy: every failure a user can cause maps to a status and a ``detail``.

Services raise these; the error middleware turns them into ``{"detail": ...}`` responses. Jobs store
``str(exc)``, which follows the reference's ``"<status>: <detail>"`` form.
"""

from __future__ import annotations

from typing import Any


class GofannonError(Exception):
    status = 500
    default_detail = "An internal server error occurred."
    #: The request field the error is about, when one is (the OpenAI-compatible API answers it as ``param``).
    param: str | None = None

    def __init__(self, detail: Any = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail = self.default_detail if detail is None else detail
        self.headers = headers or {}
        super().__init__(self.detail)

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


class BadRequest(GofannonError):
    status = 400
    default_detail = "Bad request"


class Unauthorized(GofannonError):
    status = 401
    default_detail = "Not authenticated"

    def __init__(self, detail: Any = None, *, reason: str | None = None, headers: dict[str, str] | None = None):
        headers = dict(headers or {})
        if reason:
            headers["X-Auth-Reason"] = reason
        super().__init__(detail, headers=headers)


class PaymentRequired(GofannonError):
    status = 402
    default_detail = "Insufficient spend allowance to complete request"


class Forbidden(GofannonError):
    status = 403
    default_detail = "Forbidden"


class NotFound(GofannonError):
    status = 404
    default_detail = "Not Found"


class Conflict(GofannonError):
    status = 409
    default_detail = "Conflict"


class PayloadTooLarge(GofannonError):
    status = 413
    default_detail = "Request body too large"


class UnsupportedMediaType(GofannonError):
    status = 415
    default_detail = "Unsupported Media Type"


class Unprocessable(GofannonError):
    """422 with a plain message, or with a pydantic-style error list as ``detail``."""

    status = 422
    default_detail = "Unprocessable entity"


class TooManyRequests(GofannonError):
    status = 429
    default_detail = "Too many requests"


class UpstreamError(GofannonError):
    status = 502
    default_detail = "Upstream service failed"
    upstream_status: int | None = None  # the status the remote service answered, when it answered one


class ServiceUnavailable(GofannonError):
    status = 503
    default_detail = "Service unavailable"


class GatewayTimeout(GofannonError):
    status = 504
    default_detail = "Timed out"


class DocumentNotFound(NotFound):
    def __init__(self, collection: str, doc_id: str) -> None:
        self.collection, self.doc_id = collection, doc_id
        super().__init__(f"Document '{doc_id}' not found in '{collection}'")


class RevisionConflict(Conflict):
    def __init__(self, collection: str, doc_id: str) -> None:
        self.collection, self.doc_id = collection, doc_id
        super().__init__(f"Document '{doc_id}' in '{collection}' was changed by someone else; reload and retry")

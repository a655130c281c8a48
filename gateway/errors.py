"""The gateway's one closed error hierarchy.

Every failure a client can see is an ``APIError`` subclass; each carries its
HTTP status, the OpenAI error ``type``, an optional ``param``, the metric
outcome label, and any headers (``Retry-After``). ``to_body()`` is the single
place where errors become OpenAI-shaped JSON, so the status, the body and the
counters can never disagree::

    APIError
    ├── InvalidRequest        400  invalid_request_error
    │   └── ContextTooLong    400  (prompt + max_tokens over the model's context)
    ├── Unauthorized          401  authentication_error
    ├── Forbidden             403  permission_error
    ├── NotFound              404  not_found_error (unknown model / route)
    ├── MethodNotAllowed      405
    ├── RequestTimeout        408  (the body did not arrive within server.body_timeout_s)
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415  (a Content-Type that is not JSON)
    ├── Overloaded            429  (shed at admission; Retry-After, X-Reject-Reason)
    ├── Unavailable           503  (not ready, draining, no engine; Retry-After)
    │   ├── QueueTimeout      503  (deadline passed in the queue)
    │   └── EngineDied        503  (the engine died under this request)
    ├── EngineFailed          502  (the engine failed this request)
    └── EngineStalled         504  (no token within server.stall_timeout_s)

A client that stops reading a stream is not answered at all (nobody reads): it
is cut after ``server.write_timeout_s`` and counted with outcome ``client_slow``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class APIError(Exception):
    """Base: an error answered to the client with an OpenAI-shaped body."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    outcome: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code if self.code is not None else self.status,
            }
        }


class InvalidRequest(APIError):
    status = 400
    error_type = "invalid_request_error"
    outcome = "invalid"


class ContextTooLong(InvalidRequest):
    def __init__(self, prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
            f"{max_tokens} for the completion). Please reduce the prompt or max_tokens.",
            param="max_tokens",
            code="context_length_exceeded",
        )


class Unauthorized(APIError):
    status = 401
    error_type = "authentication_error"
    outcome = "unauthorized"


class Forbidden(APIError):
    status = 403
    error_type = "permission_error"
    outcome = "forbidden"


class NotFound(APIError):
    status = 404
    error_type = "not_found_error"
    outcome = "invalid"


class MethodNotAllowed(APIError):
    status = 405
    error_type = "invalid_request_error"
    outcome = "invalid"


class RequestTimeout(APIError):
    status = 408
    error_type = "invalid_request_error"
    outcome = "invalid"


class PayloadTooLarge(APIError):
    status = 413
    error_type = "invalid_request_error"
    outcome = "invalid"


class UnsupportedMediaType(APIError):
    status = 415
    error_type = "invalid_request_error"
    outcome = "invalid"


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class Overloaded(APIError):
    status = 429
    error_type = "rate_limit_error"
    outcome = "rejected"

    def __init__(self, message: str, *, reason: str, retry_after_s: float) -> None:
        headers = _retry_after(retry_after_s) | {"X-Reject-Reason": reason}
        super().__init__(message, code=reason, headers=headers)
        self.reason = reason


class Unavailable(APIError):
    status = 503
    error_type = "service_unavailable"
    outcome = "unavailable"

    def __init__(self, message: str, *, reason: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message, code=reason, headers=_retry_after(retry_after_s))
        self.reason = reason


class QueueTimeout(Unavailable):
    """Waited past its deadline in the gateway queue."""

    outcome = "expired"


class EngineDied(Unavailable):
    """The engine died while running this request; others may serve a retry."""

    outcome = "engine_dead"

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="engine_dead")


class EngineFailed(APIError):
    status = 502
    error_type = "server_error"
    outcome = "engine_error"


class EngineStalled(APIError):
    """The engine produced no token for ``server.stall_timeout_s``; aborted."""

    status = 504
    error_type = "server_error"
    outcome = "stalled"

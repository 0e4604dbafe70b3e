"""One error hierarchy for the whole package, mapped to HTTP/SSE once, at the edge.

Before a stream starts ``guard.app`` turns a ``GuardError`` into an OpenAI-shaped JSON error with
``status_code``; after it started ``guard.generation`` writes it as an SSE error event and
``[DONE]``. Transport failures are mapped into this tree in one place, ``guard.upstream.client``.
"""

from __future__ import annotations


class GuardError(Exception):
    """Base of every error guard raises on purpose."""

    #: HTTP status used when the error reaches a client before a stream started.
    status_code: int = 500
    #: OpenAI error ``type`` field.
    error_type: str = "internal_error"
    #: OpenAI error ``code`` field (None when there is no finer code).
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(GuardError):
    """Invalid settings or policy: raised at start (or on reload, which then keeps the old one)."""

    error_type = "configuration_error"
    status_code = 422


class RiskModelError(GuardError):
    """A risk-model artifact is missing, corrupt, tampered with or of an unknown version."""

    error_type = "risk_model_error"
    status_code = 503


class DataError(GuardError):
    """Bad trajectory logs given to fit/eval/depth/augment (names file and line where it can)."""

    error_type = "data_error"


class ClientError(GuardError):
    """The client's request is wrong: 4xx before any upstream call."""

    status_code = 400
    error_type = "invalid_request_error"


class InvalidJSON(ClientError):
    code = "invalid_json"


class BodyTooLarge(ClientError):
    status_code = 413
    code = "request_too_large"


class UnsupportedMediaType(ClientError):
    status_code = 415
    code = "unsupported_media_type"


class AuthenticationError(ClientError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status_code = 403
    error_type = "permission_error"


class RateLimited(ClientError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class NotFound(ClientError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status_code = 405
    code = "method_not_allowed"


class UpstreamError(GuardError):
    """The upstream (vLLM) failed us."""

    status_code = 502
    error_type = "upstream_error"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    """Malformed SSE/JSON, or a stream that ended without ``[DONE]``."""

    code = "upstream_protocol_error"


class ScorerError(UpstreamError):
    """A guard-model call failed (network, timeout, HTTP status or malformed response).

    Never reaches a client: the batcher turns it into a fallback to the lexical scorer.
    """

    code = "guard_model_error"


class Overloaded(GuardError):
    status_code = 503
    error_type = "overloaded_error"
    code = "too_many_streams"

"""One error type for every API: a stable code, a message naming the problem, and how to send it."""
from __future__ import annotations

# WebSocket close codes (RFC 6455 §7.4.1 and the IANA registry)
WS_NORMAL = 1000
WS_GOING_AWAY = 1001  # server shutting down
WS_INVALID_DATA = 1007  # e.g. audio that does not match the declared encoding
WS_POLICY = 1008  # protocol misuse, bad settings, authentication, limits
WS_TOO_BIG = 1009
WS_INTERNAL = 1011
WS_SERVICE_RESTART = 1012  # the replica serving the session is gone: reconnect (serve --ray)
WS_TRY_LATER = 1013  # server full or behind real time

# code -> (HTTP status, WebSocket close code, gRPC status code name)
CODES: dict[str, tuple[int, int, str]] = {
    "unauthorized": (401, WS_POLICY, "UNAUTHENTICATED"),
    "invalid_settings": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "unsupported_language": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "invalid_latency": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "unsupported_decoder": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "model_not_found": (404, WS_POLICY, "NOT_FOUND"),  # a `model` the deployment does not serve (serve --ray with several)
    "invalid_audio": (400, WS_INVALID_DATA, "INVALID_ARGUMENT"),
    "invalid_message": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "unknown_message": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "invalid_request": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "input_audio_buffer_commit_empty": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "frame_too_large": (413, WS_TOO_BIG, "RESOURCE_EXHAUSTED"),
    "request_too_large": (413, WS_TOO_BIG, "RESOURCE_EXHAUSTED"),
    "audio_too_long": (400, WS_POLICY, "INVALID_ARGUMENT"),
    "session_too_long": (400, WS_POLICY, "OUT_OF_RANGE"),
    "idle_timeout": (408, WS_POLICY, "DEADLINE_EXCEEDED"),
    "backlog_full": (429, WS_POLICY, "RESOURCE_EXHAUSTED"),
    "server_full": (503, WS_TRY_LATER, "RESOURCE_EXHAUSTED"),
    "server_busy": (503, WS_TRY_LATER, "RESOURCE_EXHAUSTED"),
    "shutting_down": (503, WS_GOING_AWAY, "UNAVAILABLE"),
    "replica_lost": (503, WS_SERVICE_RESTART, "UNAVAILABLE"),  # serve --ray: the replica holding the request stopped
    "internal_error": (500, WS_INTERNAL, "INTERNAL"),
}


class ApiError(Exception):
    """A client-facing failure. `param` names the offending field when there is one."""

    def __init__(self, code: str, message: str, param: str | None = None):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    @property
    def status(self) -> int:
        return CODES[self.code][0]

    @property
    def close_code(self) -> int:
        return CODES[self.code][1]

    @property
    def grpc_status(self) -> str:
        """The gRPC status code's name (grpc.StatusCode member), for the Riva-compatible service."""
        return CODES[self.code][2]

    def openai_body(self) -> dict:
        """The OpenAI error object: {"error": {"message", "type", "param", "code"}}."""
        kind = {401: "authentication_error", 503: "server_error", 500: "server_error"}.get(
            self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def listen_event(self) -> dict:
        """The /v1/listen `error` event."""
        return {"type": "error", "code": self.code, "message": self.message, "param": self.param}

    def listen_ending(self, segments: int = 0, audio_s: float = 0.0) -> list[dict]:
        """The last events of a /v1/listen session this error ends without a final (refused, or its replica
        lost): `error`, then `closed`."""
        return [self.listen_event(), {"type": "closed", "reason": "error", "segments": segments,
                                      "audio_s": round(audio_s, 3)}]

    def realtime_event(self, client_event_id: str | None = None) -> dict:
        """The /v1/realtime `error` event (without its event_id)."""
        body = self.openai_body()["error"]
        body["event_id"] = client_event_id
        return {"type": "error", "error": body}


def error_response(e: ApiError, headers: dict | None = None, retry_after_s: int = 1):
    """The HTTP answer of `e`: the OpenAI error body, with Retry-After on a 503."""
    from starlette.responses import JSONResponse

    if e.status == 503 and headers is None:
        headers = {"Retry-After": str(retry_after_s)}
    return JSONResponse(e.openai_body(), status_code=e.status, headers=headers)

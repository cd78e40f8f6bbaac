"""API keys: `Authorization: Bearer KEY`; browsers, which cannot set headers on a WebSocket, may pass
`?api_key=KEY` instead. Keys are compared in constant time; none are ever logged."""
from __future__ import annotations

import functools
import hmac
from typing import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError, error_response


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return query.get("api_key") or None


def check(keys: tuple[str, ...], headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    """ApiError('unauthorized') unless keys are off or a valid one is presented."""
    if not keys:
        return
    key = presented_key(headers, query)
    if key is None:
        raise ApiError("unauthorized", "missing API key: send 'Authorization: Bearer KEY'")
    # compare against every key so the time does not reveal which one (or how many) matched
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(key.encode(), k.encode())
    if not ok:
        raise ApiError("unauthorized", "invalid API key")


def requires_key(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """An HTTP endpoint that answers 401 (OpenAI error body) unless a valid API key of the app's config
    (`app.state.cfg`) is presented."""

    @functools.wraps(endpoint)
    async def checked(request: Request) -> Response:
        try:
            check(request.app.state.cfg.api_keys, request.headers, request.query_params)
        except ApiError as e:
            return error_response(e)
        return await endpoint(request)

    return checked

"""The one place where errors become HTTP statuses, as ``application/problem+json``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from nurture import errors

STATUS: list[tuple[type[errors.NurtureError], int, str]] = [
    (errors.MalformedPayload, 400, "malformed-payload"),
    (errors.Unauthenticated, 401, "unauthenticated"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.NotConfigured, 404, "not-configured"),
    (errors.NotFound, 404, "not-found"),
    (errors.Conflict, 409, "conflict"),
    (errors.PayloadTooLarge, 413, "payload-too-large"),
    (errors.UnsupportedMediaType, 415, "unsupported-media-type"),
    (errors.InvalidFields, 422, "invalid-fields"),
    (errors.TooManyAttempts, 429, "too-many-attempts"),
    (errors.StorageUnavailable, 503, "storage-unavailable"),
    (errors.ProviderError, 502, "provider-error"),
    (errors.ConfigError, 500, "configuration-error"),
]


def problem(status: int, kind: str, detail: str, **extra: Any) -> Response:
    body = {
        "type": f"https://nurture.dev/problems/{kind}",
        "title": kind.replace("-", " "),
        "status": status,
        "detail": detail,
        **extra,
    }
    retry_after = extra.pop("retry_after", 1 if status == 503 else None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


def status_for(exc: errors.NurtureError) -> tuple[int, str]:
    for cls, status, kind in STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "internal-error"


def problem_for(exc: errors.NurtureError) -> Response:
    status, kind = status_for(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.InvalidFields):
        extra["errors"] = [{"field": p.field, "message": p.message} for p in exc.problems]
    if isinstance(exc, errors.TooManyAttempts):
        extra["retry_after"] = max(1, math.ceil(exc.retry_after))
    return problem(status, kind, str(exc), **extra)


# Path prefixes answered with HTML pages instead of problem+json (the console): the status and
# kind are still decided here; the renderer only draws them.
HtmlRenderer = Callable[[Request, int, str, str, dict[str, Any]], Response]


def html_errors(app: Starlette, prefix: str, renderer: HtmlRenderer) -> None:
    if not hasattr(app.state, "html_errors"):
        app.state.html_errors = {}
    app.state.html_errors[prefix] = renderer


def _html_renderer(request: Request) -> HtmlRenderer | None:
    renderers: dict[str, HtmlRenderer] = getattr(request.app.state, "html_errors", {})
    path = request.url.path
    for prefix, renderer in renderers.items():
        if path == prefix or path.startswith(prefix + "/"):
            return renderer
    return None


async def _nurture_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.NurtureError)
    renderer = _html_renderer(request)
    if renderer is None:
        return problem_for(exc)
    status, kind = status_for(exc)
    extra: dict[str, Any] = {"retry_after": 1} if status == 503 else {}
    if isinstance(exc, errors.TooManyAttempts):
        extra["retry_after"] = max(1, math.ceil(exc.retry_after))
    return renderer(request, status, kind, str(exc), extra)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        fields.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    renderer = _html_renderer(request)
    if renderer is not None:
        return renderer(request, 422, "invalid-fields", detail, {})
    return problem(422, "invalid-fields", detail, errors=fields)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    renderer = _html_renderer(request)
    if renderer is not None:
        return renderer(request, exc.status_code, "http-error", str(exc.detail), {})
    return problem(exc.status_code, "http-error", str(exc.detail))


def install(app: Starlette) -> None:
    app.add_exception_handler(errors.NurtureError, _nurture_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)

"""The shared HTTP client for provider APIs and the one mapping from HTTP outcomes to retries.

Every HTTP provider sends through ``request``: connection failures are "not sent" (retry),
timeouts after the request went out are "maybe sent" (``SendUncertain``), 429 and 5xx retry
(honouring ``Retry-After``), other 4xx fail at once.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from nurture.core.channels import SendUncertain
from nurture.errors import ProviderError

USER_AGENT = "nurture (+https://nurture.dev)"


def new_client(
    timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One client per process: connection pooling across sends; redirects are never followed."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        transport=transport,
        follow_redirects=False,
        headers={"user-agent": USER_AGENT},
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
    )


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta or HTTP date), ``None`` when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        date = response.headers.get("date")
        base = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None
    if base is None:
        return None
    return max(0.0, (when - base).total_seconds())


def check(response: httpx.Response, provider: str) -> None:
    """Raise the right ``ProviderError`` for a non-2xx answer."""
    if response.is_success:
        return
    detail = response.text[:300].replace("\n", " ")
    message = f"{provider}: HTTP {response.status_code}: {detail}"
    status = response.status_code
    if status == 429 or status >= 500 or status == 408:
        raise ProviderError(message, retry_after=retry_after(response))
    raise ProviderError(message, permanent=True)


async def request(
    client: httpx.AsyncClient, provider: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await client.request(method, url, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ProviderError(f"{provider}: cannot connect: {exc!r}") from exc
    except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise SendUncertain(f"{provider}: no answer after sending: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise ProviderError(f"{provider}: {exc!r}") from exc

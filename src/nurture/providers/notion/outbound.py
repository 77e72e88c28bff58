"""Notion's REST API, the three calls the mirror needs, and property values in Notion's shapes.

- ``POST /v1/databases/{id}/query`` with a filter on the key property finds a contact's page;
- ``POST /v1/pages`` creates it under the database, ``PATCH /v1/pages/{id}`` updates it.

Every request carries ``Authorization: Bearer <token>`` and ``Notion-Version``. 429 (Notion's
``rate_limited``, about 3 requests/s per integration), 409 ``conflict_error`` and 5xx retry,
honouring ``Retry-After``; other 4xx are permanent (a bad property mapping, a database the
integration cannot see), except a page that vanished, which the caller recreates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime
from typing import Any

import httpx

from nurture.errors import ProviderError
from nurture.providers.http import request, retry_after

NOTION_VERSION = "2022-06-28"
API_URL = "https://api.notion.com"
TEXT_LIMIT = 2000  # characters per rich-text object
KEY_TYPES = ("email", "title", "rich_text")


class PageGone(ProviderError):
    """The mirrored page was deleted or archived in Notion: find or create it again."""


class RateLimited(ProviderError):
    """429 ``rate_limited``: the integration, not this request, must wait ``retry_after``."""


def _text(value: Any) -> str:
    return str(value)[:TEXT_LIMIT]


def _date(value: Any) -> str | None:
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value).strip()
    if not text:
        return None
    try:
        # A bare date stays a date (Notion shows no time); anything longer is a date-time.
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date") from None


def _number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    # Notion refuses commas inside option names.
    return [n for n in (str(i).strip().replace(",", " ") for i in items) if n]


def property_value(kind: str, value: Any) -> dict[str, Any]:
    """``value`` (a native value or rendered text; ``None``/"" clears) as Notion's property JSON."""
    empty = value is None or value == "" or value == []
    if kind in ("title", "rich_text"):
        return {kind: [] if empty else [{"type": "text", "text": {"content": _text(value)}}]}
    if kind in ("email", "url", "phone_number"):
        return {kind: None if empty else _text(value)}
    if kind == "number":
        return {"number": None if empty else _number(value)}
    if kind == "select":
        return {"select": None if empty else {"name": _names([value])[0][:100]}}
    if kind == "multi_select":
        return {"multi_select": [] if empty else [{"name": n[:100]} for n in _names(value)]}
    if kind == "date":
        start = None if empty else _date(value)
        return {"date": None if start is None else {"start": start}}
    if kind == "checkbox":
        if isinstance(value, str):
            return {"checkbox": value.strip().lower() in ("true", "yes", "1", "on")}
        return {"checkbox": bool(value)}
    raise ValueError(f"unknown Notion property type {kind!r}")


def key_filter(name: str, kind: str, value: str) -> dict[str, Any]:
    """The database-query filter that finds the page whose key property equals ``value``."""
    return {"property": name, kind: {"equals": value}}


class NotionClient:
    """The three calls; ``before_request`` takes a rate-limit token before each one."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        token: str,
        *,
        api_url: str = API_URL,
        version: str = NOTION_VERSION,
        before_request: Callable[[], Awaitable[None]] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.client = client
        self.api_url = api_url.rstrip("/")
        self.headers = {
            "authorization": f"Bearer {token}",
            "notion-version": version,
            "content-type": "application/json",
        }
        self.before_request = before_request
        self.timeout = timeout

    async def _call(self, method: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.before_request is not None:
            await self.before_request()
        kwargs: dict[str, Any] = {"timeout": self.timeout} if self.timeout is not None else {}
        response = await request(
            self.client,
            "notion",
            method,
            self.api_url + path,
            json=dict(body),
            headers=self.headers,
            **kwargs,
        )
        status = response.status_code
        if 200 <= status < 300:
            found = response.json()
            return found if isinstance(found, dict) else {}
        detail = f"notion: {method} {path}: HTTP {status}: {response.text[:300]}"
        if status == 429:
            raise RateLimited(detail, retry_after=retry_after(response))
        if status == 409 or status >= 500:
            raise ProviderError(detail, retry_after=retry_after(response))
        raise ProviderError(detail, permanent=True)

    async def find_page(self, database_id: str, key: dict[str, Any]) -> str | None:
        found = await self._call(
            "POST", f"/v1/databases/{database_id}/query", {"filter": key, "page_size": 1}
        )
        results = found.get("results") or []
        live = [r for r in results if isinstance(r, dict) and not r.get("archived")]
        return str(live[0]["id"]) if live else None

    async def create_page(self, database_id: str, properties: dict[str, Any]) -> str:
        found = await self._call(
            "POST",
            "/v1/pages",
            {"parent": {"database_id": database_id}, "properties": properties},
        )
        if "id" not in found:
            raise ProviderError("notion: page created without an id in the answer")
        return str(found["id"])

    async def update_page(self, page_id: str, properties: dict[str, Any]) -> None:
        try:
            found = await self._call("PATCH", f"/v1/pages/{page_id}", {"properties": properties})
        except ProviderError as exc:
            # 404: deleted (or unshared); 400 "archived": moved to the trash by someone.
            if exc.permanent and ("HTTP 404" in str(exc) or "archived" in str(exc)):
                raise PageGone(str(exc)) from exc
            raise
        if found.get("archived"):
            raise PageGone(f"notion: page {page_id} is archived")

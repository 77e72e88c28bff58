"""A fake of the Notion API (version 2022-06-28) that checks requests the way Notion documents
them: one database with a schema, pages kept in memory. Serve its ``app()`` with ``serve``."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nurture.testing.servers import Recorded, Recorder

NOTION_VERSION = "2022-06-28"
TOKEN = "secret_notion_test_token"


# -- Notion -----------------------------------------------------------------------------------

_RICH = ("title", "rich_text")


def _check_value(kind: str, value: Any) -> str | None:
    """Notion's property value shapes (API 2022-06-28); a message when ``value`` is wrong."""
    if not isinstance(value, dict) or set(value) - {kind, "type"} or kind not in value:
        return f"expected {{{kind!r}: ...}}"
    v = value[kind]
    if kind in _RICH:
        ok = isinstance(v, list) and all(
            isinstance(t, dict)
            and isinstance(t.get("text", {}).get("content"), str)
            and len(t["text"]["content"]) <= 2000
            for t in v
        )
        return None if ok else "expected a list of rich text objects"
    if kind in ("email", "url", "phone_number"):
        return None if v is None or isinstance(v, str) else "expected a string or null"
    if kind == "number":
        ok = v is None or (isinstance(v, int | float) and not isinstance(v, bool))
        return None if ok else "expected a number or null"
    if kind == "select":
        ok = v is None or (
            isinstance(v, dict) and isinstance(v.get("name"), str) and "," not in v["name"]
        )
        return None if ok else "expected {name} or null"
    if kind == "multi_select":
        ok = isinstance(v, list) and all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in v
        )
        return None if ok else "expected a list of {name}"
    if kind == "date":
        ok = v is None or (isinstance(v, dict) and isinstance(v.get("start"), str))
        return None if ok else "expected {start} or null"
    if kind == "checkbox":
        return None if isinstance(v, bool) else "expected a boolean"
    return f"unsupported type {kind}"


def plain(value: dict[str, Any]) -> Any:
    """A stored property back as a plain value, for asserts."""
    kind = next(k for k in value if k != "type")
    v = value[kind]
    if kind in _RICH:
        return "".join(t["text"]["content"] for t in v)
    if kind == "select":
        return None if v is None else v["name"]
    if kind == "multi_select":
        return [o["name"] for o in v]
    if kind == "date":
        return None if v is None else v["start"]
    return v


class NotionFake(Recorder):
    """One database with a schema; pages kept in memory."""

    def __init__(self, database_id: str, schema: dict[str, str]) -> None:
        super().__init__()
        self.database_id = database_id
        self.schema = dict(schema)
        self.pages: dict[str, dict[str, Any]] = {}

    def _problem(self, status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse(
            {"object": "error", "status": status, "code": code, "message": message},
            status_code=status,
        )

    def _auth(self, entry: Recorded) -> JSONResponse | None:
        if entry.headers.get("authorization") != f"Bearer {TOKEN}":
            return self._problem(401, "unauthorized", "API token is invalid.")
        if entry.headers.get("notion-version") != NOTION_VERSION:
            return self._problem(400, "missing_version", "Notion-Version header is missing.")
        if not entry.headers.get("content-type", "").startswith("application/json"):
            return self._problem(400, "invalid_request", "expected JSON")
        return None

    def _properties(self, props: Any) -> str | None:
        if not isinstance(props, dict):
            return "properties must be an object"
        for name, value in props.items():
            kind = self.schema.get(name)
            if kind is None:
                return f"{name} is not a property that exists."
            problem = _check_value(kind, value)
            if problem:
                return f"{name}: {problem}"
        return None

    async def query(self, request: Request) -> Response:
        entry, forced = await self.record(request)
        if forced is not None:
            return forced
        bad = self._auth(entry)
        if bad is not None:
            return bad
        if request.path_params["db"] != self.database_id:
            return self._problem(404, "object_not_found", "Could not find database.")
        flt = (entry.body or {}).get("filter")
        if not isinstance(flt, dict) or "property" not in flt:
            return self._problem(400, "validation_error", "filter needs a property")
        name = flt["property"]
        kind = self.schema.get(name)
        if kind is None or kind not in flt or set(flt[kind]) != {"equals"}:
            return self._problem(400, "validation_error", f"bad filter for {name}")
        wanted = flt[kind]["equals"]
        hits = [
            {"object": "page", "id": pid, "archived": p["archived"], "properties": p["properties"]}
            for pid, p in self.pages.items()
            if name in p["properties"]
            and plain(p["properties"][name]) == wanted
            and not p["archived"]
        ]
        size = int((entry.body or {}).get("page_size", 100))
        return JSONResponse({"object": "list", "results": hits[:size], "has_more": False})

    async def create(self, request: Request) -> Response:
        entry, forced = await self.record(request)
        if forced is not None:
            return forced
        bad = self._auth(entry)
        if bad is not None:
            return bad
        body = entry.body or {}
        if body.get("parent") != {"database_id": self.database_id}:
            return self._problem(400, "validation_error", "parent.database_id is wrong")
        problem = self._properties(body.get("properties"))
        if problem:
            return self._problem(400, "validation_error", problem)
        pid = str(uuid.uuid4())
        self.pages[pid] = {"properties": dict(body["properties"]), "archived": False}
        return JSONResponse({"object": "page", "id": pid, "archived": False})

    async def update(self, request: Request) -> Response:
        entry, forced = await self.record(request)
        if forced is not None:
            return forced
        bad = self._auth(entry)
        if bad is not None:
            return bad
        page = self.pages.get(request.path_params["page"])
        if page is None:
            return self._problem(404, "object_not_found", "Could not find page.")
        if page["archived"]:
            return self._problem(400, "validation_error", "Can't edit block that is archived.")
        problem = self._properties((entry.body or {}).get("properties"))
        if problem:
            return self._problem(400, "validation_error", problem)
        page["properties"].update(entry.body["properties"])
        return JSONResponse(
            {"object": "page", "id": request.path_params["page"], "archived": False}
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/databases/{db}/query", self.query, methods=["POST"]),
                Route("/v1/pages", self.create, methods=["POST"]),
                Route("/v1/pages/{page}", self.update, methods=["PATCH"]),
            ]
        )

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/v1/pages")]

    def page_for(self, name: str, value: Any) -> dict[str, Any]:
        found = [
            {k: plain(v) for k, v in p["properties"].items()}
            for p in self.pages.values()
            if name in p["properties"]
            and plain(p["properties"][name]) == value
            and not p["archived"]
        ]
        assert len(found) == 1, f"{len(found)} pages with {name} = {value!r}"
        return found[0]

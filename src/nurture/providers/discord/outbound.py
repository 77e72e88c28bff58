"""Discord incoming-webhook bodies: ``{content, embeds}`` checked against Discord's limits.

Discord rejects a message over its limits with a 400 that no retry fixes, so a body is checked
before it is sent and a bad one fails at once with the limit it broke. Mentions are disabled
unless the template asks for them: contact data must never ping ``@everyone``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# https://discord.com/developers/docs/resources/message#embed-object-embed-limits
CONTENT_MAX = 2000
EMBEDS_MAX = 10
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_MAX = 256
EMBED_TOTAL_MAX = 6000
COLOR_MAX = 0xFFFFFF
KEYS = {"content", "embeds", "username", "avatar_url", "tts", "allowed_mentions", "flags"}
EMBED_KEYS = {
    "title",
    "description",
    "url",
    "color",
    "timestamp",
    "fields",
    "footer",
    "author",
    "thumbnail",
    "image",
}


def _limit(where: str, value: Any, limit: int) -> str:
    text = "" if value is None else str(value)
    if len(text) > limit:
        raise ValueError(f"{where} is {len(text)} characters; Discord allows {limit}")
    return text


def _color(value: Any) -> int:
    if isinstance(value, str):
        value = int(value[1:], 16) if value.startswith("#") else int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= COLOR_MAX:
        raise ValueError(f"embed color must be an integer 0..{COLOR_MAX}")
    return value


def _embed(index: int, embed: Any) -> tuple[dict[str, Any], int]:
    where = f"embeds[{index}]"
    if not isinstance(embed, Mapping):
        raise ValueError(f"{where} must be an object")
    unknown = set(embed) - EMBED_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    total = 0
    for key, limit in (("title", TITLE_MAX), ("description", DESCRIPTION_MAX)):
        if embed.get(key) not in (None, ""):
            out[key] = _limit(f"{where}.{key}", embed[key], limit)
            total += len(out[key])
    for key in ("url", "timestamp", "thumbnail", "image"):
        if embed.get(key) not in (None, ""):
            out[key] = embed[key]
    if embed.get("color") not in (None, ""):
        out["color"] = _color(embed["color"])
    fields = embed.get("fields") or []
    if not isinstance(fields, list) or len(fields) > FIELDS_MAX:
        raise ValueError(f"{where}.fields must be a list of at most {FIELDS_MAX}")
    if fields:
        out["fields"] = []
        for i, f in enumerate(fields):
            if not isinstance(f, Mapping) or not f.get("name") or f.get("value") in (None, ""):
                raise ValueError(f"{where}.fields[{i}] needs a name and a non-empty value")
            name = _limit(f"{where}.fields[{i}].name", f["name"], FIELD_NAME_MAX)
            value = _limit(f"{where}.fields[{i}].value", f["value"], FIELD_VALUE_MAX)
            total += len(name) + len(value)
            item: dict[str, Any] = {"name": name, "value": value}
            if "inline" in f:
                item["inline"] = bool(f["inline"])
            out["fields"].append(item)
    for key, limit in (("footer", FOOTER_MAX), ("author", AUTHOR_MAX)):
        part = embed.get(key)
        if part in (None, ""):
            continue
        if isinstance(part, str):
            part = {"text" if key == "footer" else "name": part}
        if not isinstance(part, Mapping):
            raise ValueError(f"{where}.{key} must be an object or text")
        label = "text" if key == "footer" else "name"
        text = _limit(f"{where}.{key}.{label}", part.get(label), limit)
        total += len(text)
        out[key] = {**part, label: text}
    return out, total


def discord_body(data: Any) -> dict[str, Any]:
    """A Discord execute-webhook body from a rendered payload (text is the message content)."""
    if isinstance(data, str):
        data = {"content": data}
    if not isinstance(data, Mapping):
        raise ValueError("a Discord payload is text or an object {content, embeds}")
    unknown = set(data) - KEYS
    if unknown:
        raise ValueError(f"unknown Discord message keys: {', '.join(sorted(unknown))}")
    body: dict[str, Any] = {
        k: data[k] for k in ("username", "avatar_url", "tts", "flags") if k in data
    }
    content = _limit("content", data.get("content"), CONTENT_MAX)
    if content:
        body["content"] = content
    embeds = data.get("embeds") or []
    if not isinstance(embeds, list) or len(embeds) > EMBEDS_MAX:
        raise ValueError(f"embeds must be a list of at most {EMBEDS_MAX}")
    if embeds:
        built = [_embed(i, e) for i, e in enumerate(embeds)]
        total = sum(t for _, t in built)
        if total > EMBED_TOTAL_MAX:
            raise ValueError(f"embeds hold {total} characters; Discord allows {EMBED_TOTAL_MAX}")
        body["embeds"] = [e for e, _ in built]
    if not content and not embeds:
        raise ValueError("a Discord message needs content or embeds")
    body["allowed_mentions"] = data.get("allowed_mentions") or {"parse": []}
    return body

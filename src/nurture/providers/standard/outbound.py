"""Outbound webhooks signed with Standard Webhooks, and the SSRF guard in front of them.

``webhook-id`` is derived from the job key, so every retry of one delivery carries the same id
(receivers deduplicate on it); ``webhook-timestamp`` is per attempt.

The guard resolves the target once and the request then connects to that very address (the
``Host`` header and TLS server name stay the URL's), so a name that resolves to a public
address for the check and to a private one for the connection (DNS rebinding) gets nowhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from nurture.core.channels import WebhookResponse
from nurture.errors import ProviderError
from nurture.providers.http import request, retry_after
from nurture.providers.signing import sign_standard


def webhook_id(job_key: str) -> str:
    return "msg_" + hashlib.sha256(job_key.encode()).hexdigest()[:32]


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def guard_target(url: str, *, allow_private: bool) -> str | None:
    """Refuse URLs that resolve to loopback, private, link-local or reserved addresses; return
    the address to connect to (``None`` with ``allow_private``: the client resolves as usual).

    A flow URL that points inside the network (cloud metadata at 169.254.169.254, an admin
    port on localhost) would let whoever edits the automation folder probe it. Endpoints that
    really live inside the network say ``allow_private: true``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(f"webhook: {url!r} is not an http(s) URL", permanent=True)
    if allow_private:
        return None
    host = parts.hostname
    try:
        addresses = await resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise ProviderError(f"webhook: cannot resolve {host}: {exc}") from exc
    blocked = sorted({a for a in addresses if not _is_public(a)})
    if blocked:
        raise ProviderError(
            f"webhook: {host} resolves to a private or loopback address ({', '.join(blocked)}); "
            "set allow_private: true on the endpoint if that is intended",
            permanent=True,
        )
    if not addresses:
        raise ProviderError(f"webhook: {host} resolves to no address")
    return addresses[0]


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``url`` with its host replaced by ``address``, and the ``Host`` header and TLS server
    name (``sni_hostname``) that keep the request what it was for the receiver."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address.split('%', 1)[0]}]" if ":" in address else address
    port = f":{parts.port}" if parts.port else ""
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + literal + port
    shown = f"[{host}]" if ":" in host else host
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"host": shown + port}, extensions


class WebhookPoster:
    name = "http"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(
        self,
        url: str,
        secret: str,
        msg_id: str,
        timestamp: int,
        body: bytes,
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        connect_to: str | None = None,
    ) -> WebhookResponse:
        # Discord, Slack and plain JSON catch hooks get no signature (an empty secret).
        sent = sign_standard(secret, msg_id, timestamp, body) if secret else {}
        sent["content-type"] = "application/json"
        sent.update(headers or {})
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        if connect_to is not None:
            url, host, extensions = pinned_request(url, connect_to)
            sent.update(host)
            if extensions:
                kwargs["extensions"] = extensions
        response = await request(
            self.client, "webhook", "POST", url, content=body, headers=sent, **kwargs
        )
        return WebhookResponse(response.status_code, retry_after(response), response.text[:500])

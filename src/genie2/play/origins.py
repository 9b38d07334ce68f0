"""Who may play: the origin check on the WebSocket handshake and the Host names a loopback server answers.

Only pages of this server's own origin may open /ws: a handshake whose Origin header is not the scheme,
host and port of its Host header, nor one of `allow_origins`, is refused before it takes a slot (closed
with code 1008: an HTTP 403). Otherwise any web page the user visits could play on their CPU. Browsers
always send Origin; a request without one (a Python script) is let in, as it could set any Origin anyway.
A server listening on loopback also answers only requests whose Host is a loopback name (`loopback_hosts`):
otherwise a page whose domain is re-pointed at 127.0.0.1 (DNS rebinding) would be of "its own" origin.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
logger = logging.getLogger("genie2.play")


def origin_key(origin: str) -> tuple[str, str, int] | None:
    """An origin (http[s]://host[:port]) as (scheme, host, port), or None if it is not one."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:  # a port that is not a number in [0, 65535], a bad IPv6 address
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def loopback_hosts(host: str) -> list[str] | None:
    """The Host names a server bound to `host` answers: the loopback names when it listens on
    loopback only (refusing DNS-rebound names), else None (any)."""
    return list(LOOPBACK) if host in LOOPBACK or host.startswith("127.") else None


class OriginCheck:
    """The origins whose pages may open the WebSocket: the server's own, `allow_origins`, or any with "*"."""

    def __init__(self, allow_origins: list[str]):
        self.any = "*" in allow_origins
        self.allowed = {origin_key(origin) for origin in allow_origins if origin != "*"}
        self.refused: set[str] = set()  # logged once each

    def allows(self, socket: WebSocket) -> bool:
        """Whether the handshake comes from this server's own page, an allowed origin, or no browser (a refused
        origin is logged, once)."""
        origin = socket.headers.get("origin")
        if origin is None or self.any:
            return True  # browsers always send Origin: without one it is a script, which could send any
        key = origin_key(origin)
        own = origin_key(f"{'https' if socket.url.scheme == 'wss' else 'http'}://{socket.headers.get('host', '')}")
        if key is not None and (key == own or key in self.allowed):
            return True
        if origin not in self.refused:
            self.refused.add(origin)
            logger.warning("refused a WebSocket from origin %r: to let it play, pass --allow-origin", origin)
        return False

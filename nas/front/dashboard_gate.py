"""Who may reach a served dashboard: a token made for each launch, and a check of the Host header.

optuna-dashboard has no authentication of its own and ignores the Host header: whoever reaches its port (every user
of the machine on loopback; a web page through DNS rebinding) could read, change or delete studies. It is therefore
served behind `TokenGate`: a token made for each launch, printed once in the URL, and a check of the Host header
against `AllowedHosts`.

Why a module of its own: it is the security boundary of `dashboard`, read and tested apart from what is served.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Callable, Container, Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from nas.engine.settings import is_loopback

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class TokenGate:
    """A WSGI app served only to requests that carry the launch's token and name an allowed host (as Jupyter does).

    The token comes once in the URL (`?token=...`): the answer is a redirect to the same page without it that sets a
    cookie (HttpOnly, SameSite=Lax), which the dashboard's own API calls then carry; scripts may send
    `Authorization: Bearer <token>` instead. A Host header that is not one of `hosts` (its port aside: an SSH tunnel may
    use another) is refused first: a page of another site that rebinds its name to this machine sends its own name."""

    def __init__(self, app: WSGIApp, token: str, hosts: Container[str], cookie: str) -> None:
        self.app, self._token, self.hosts, self.cookie = app, token.encode(), hosts, cookie

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _hostname(environ.get("HTTP_HOST", "")) not in self.hosts:
            return _refuse(start_response, "this dashboard answers to its own address only (the Host header names another)")
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given:
            if not self._valid(given[-1]):
                return _refuse(start_response, "wrong token")
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/")) + (f"?{rest}" if rest else "")
            start_response("302 Found", [("Location", location), ("Cache-Control", "no-store"), ("Content-Length", "0"),
                                         ("Set-Cookie", f"{self.cookie}={self._token.decode()}; Path=/; HttpOnly; SameSite=Lax")])
            return [b""]
        if self._valid(self._cookie(environ)) or self._valid(environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")):
            return self.app(environ, start_response)
        return _refuse(start_response, "no token: open the URL that the dashboard command printed (it ends with ?token=...)")

    def _valid(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(errors="replace"), self._token)

    def _cookie(self, environ: dict[str, Any]) -> str | None:
        try:
            morsel = SimpleCookie(environ.get("HTTP_COOKIE", "")).get(self.cookie)
        except CookieError:
            return None
        return morsel.value if morsel else None


def _refuse(start_response: Callable[..., Any], why: str) -> list[bytes]:
    body = f"403 Forbidden: {why}\n".encode()
    start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def _hostname(host_header: str) -> str:
    """The host of a Host header, without its port or brackets, lowercase: `[::1]:8080` -> `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


class AllowedHosts:
    """The names a request may give in its Host header for a dashboard bound to `host`: that host; on loopback or on
    every interface the loopback names too; on every interface this machine's name, its FQDN and any address of
    its own (one that a socket can bind to). Never a name that merely resolves to this machine: that is what DNS
    rebinding makes of an attacker's name."""

    def __init__(self, host: str) -> None:
        host = host.strip("[]").lower()
        self.wildcard = host in WILDCARDS
        self.names = {host} | (set(LOOPBACK_NAMES) if self.wildcard or is_loopback(host) else set())
        if self.wildcard:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self._own: dict[str, bool] = {}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name:
            return False
        if name in self.names:
            return True
        if not self.wildcard:
            return False
        if name not in self._own:
            self._own[name] = _own_address(name)
        return self._own[name]


def _own_address(name: str) -> bool:
    """Whether `name` is an IP address of this machine (binding to it succeeds only then)."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False

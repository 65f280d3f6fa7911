"""Where a webhook may be sent: :class:`DestinationGuard`.

A webhook URL is chosen by an API client, so the server must not become its
proxy into the operator's network. The guard refuses loopback, private,
link-local (``169.254.169.254``), carrier-grade NAT, multicast and other
non-global addresses, cloud metadata names, URLs with credentials
(``http://127.0.0.1@evil/``) and schemes other than http(s).
:meth:`DestinationGuard.check` resolves the host and checks every address it
resolves to, returning the one to connect to, so the caller connects to the
address that was checked (no second lookup a rebinding DNS could answer
differently). ``webhook_allow`` (config) lists hosts, ``host:port``, IPs or
CIDRs that may be private all the same (self-hosted receivers).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from townsquare.errors import RequestError

#: Names that reach cloud metadata services or this machine whatever they resolve to.
BLOCKED_NAMES = frozenset({
    "localhost", "metadata", "metadata.google.internal", "metadata.goog",
    "instance-data", "instance-data.ec2.internal", "metadata.azure.internal",
    "metadata.tencentyun.com", "100-100-100-200.metadata",
})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationRefused(RequestError, ValueError):
    """A webhook URL that may not be called (the message says why)."""

    code = "webhook_refused"
    param = "webhook_url"


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _as_ip(text: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class DestinationGuard:
    """Which webhook destinations are allowed (see the module docstring)."""

    def __init__(
        self, allow: list[str] | None = None,
        resolve: Callable[[str, int], list[str]] = _resolve,
    ) -> None:
        self.resolve = resolve
        self._hosts: set[str] = set()
        self._nets: list[Network] = []
        for entry in allow or []:
            entry = entry.strip().lower()
            try:
                self._nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self._hosts.add(entry)

    def _allowed(self, host: str, port: int, ip: Address | None) -> bool:
        if host in self._hosts or f"{host}:{port}" in self._hosts:
            return True
        return ip is not None and any(ip in net for net in self._nets)

    def parse(self, url: str) -> tuple[str, str, int]:
        """Scheme, host and port of a URL that may be called, before any DNS."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise DestinationRefused(f"webhook_url is not a valid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise DestinationRefused("webhook_url must be an http(s) URL")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise DestinationRefused("webhook_url must not carry credentials (user@host)")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise DestinationRefused("webhook_url has no host")
        port = port or (443 if scheme == "https" else 80)
        ip = _as_ip(host)
        if self._allowed(host, port, ip):
            return scheme, host, port
        if host in BLOCKED_NAMES or host.endswith(".localhost"):
            raise DestinationRefused(f"webhook_url host {host!r} is a local or metadata name")
        if ip is not None and not ip.is_global:
            raise DestinationRefused(
                f"webhook_url host {host} is a private, loopback or link-local address "
                "(an operator can allow it with webhook_allow)")
        return scheme, host, port

    def check(self, url: str) -> Target:
        """Resolve and check every address: the one to connect to, or DestinationRefused."""
        scheme, host, port = self.parse(url)
        try:
            addresses = self.resolve(host, port)
        except OSError as exc:
            raise DestinationRefused(f"webhook host {host!r} does not resolve: {exc}") from None
        if not addresses:
            raise DestinationRefused(f"webhook host {host!r} does not resolve")
        for address in addresses:
            ip = _as_ip(address)
            if ip is None:
                raise DestinationRefused(f"webhook host {host!r} resolved to {address!r}")
            if not ip.is_global and not self._allowed(host, port, ip):
                raise DestinationRefused(
                    f"webhook host {host!r} resolves to {ip}, a private, loopback or "
                    "link-local address (an operator can allow it with webhook_allow)")
        return Target(url, scheme, host, port, addresses[0])

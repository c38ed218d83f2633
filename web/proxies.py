"""Which browser a request comes from, as the console tells the backend (``x-forwarded-for``).

The backend limits failed logins, sign-ups and reset requests per client address. Every call it
gets from the console comes from the console's own address, so the console names the browser:
the connecting peer, or — when that peer is a trusted proxy in front of the console (a TLS
terminator) — the nearest untrusted hop of the proxy's ``x-forwarded-for``. The same rule, and the
same setting (``LUMINA_TRUSTED_PROXIES``), as the backend's ``api.auth.TrustedProxies``; repeated
here because the console imports nothing of the backend.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["DEFAULT_TRUSTED_PROXIES", "TrustedProxies"]

DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1"

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    def __init__(self, spec: str = DEFAULT_TRUSTED_PROXIES) -> None:
        """``spec``: comma-separated addresses or CIDR networks ('' trusts no peer); ``ValueError``
        names a bad entry."""
        networks = []
        for entry in (e.strip() for e in spec.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"trusted proxies: {entry!r} is not an IP address or network") from None
        self._networks = tuple(networks)

    def _trusted(self, address: _Address) -> bool:
        return any(address in network for network in self._networks)

    def client(self, peer: str, forwarded: Iterable[str] = ()) -> str:
        """The browser's address: ``peer``, unless it is a trusted proxy; then the nearest hop of
        ``forwarded`` (the ``x-forwarded-for`` values) that is not one (the leftmost when all are)."""
        nearest = _address(peer)
        if nearest is None or not self._trusted(nearest):
            return peer
        hops = [hop.strip() for value in forwarded for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            parsed = _address(_strip_port(hop))
            if parsed is None:
                break
            nearest = parsed
            if not self._trusted(parsed):
                break
        return str(nearest)


def _address(text: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _strip_port(hop: str) -> str:
    if hop.startswith("["):
        return hop[1:hop.index("]")] if "]" in hop else hop
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop

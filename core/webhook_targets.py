"""Where a webhook may be sent: public addresses only, unless the operator lists a network.

A tenant chooses `callback_url`, so without this check the farm would post (and report answers) to
anything it can reach: loopback services, the private network, the cloud metadata address. The same
rules run twice: when the URL is submitted (a literal address or a name that resolves to a refused one
answers 422) and when it is sent, after DNS resolution, against the address actually connected to (a
name that resolves elsewhere later is still refused, and the request goes to the checked address).

One parser for both ends (httpx's, the one that sends), so a URL cannot mean one host to the check and
another to the sender.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that mean this host whatever DNS says (RFC 6761); refused without asking a resolver.
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
ALLOW_HINT = "list trusted receivers' networks in ZFARM_WEBHOOK_ALLOW_NETWORKS"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class UnsafeTarget(ValueError):
    """The URL may not receive webhooks; the message is the rule it broke."""


@dataclass(frozen=True)
class Target:
    """A checked destination: connect to `address`, speak to `url`'s host (Host header and TLS name)."""

    url: httpx.URL
    address: str


def parse_networks(value: str | Sequence[str] | None) -> tuple[IPNetwork, ...]:
    """`ZFARM_WEBHOOK_ALLOW_NETWORKS`: CIDRs separated by commas; raises ValueError naming the bad one."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"must be CIDR networks separated by commas, like 10.0.0.0/8 (got {item!r})") from exc
    return tuple(networks)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, Teredo, NAT64): each reaches that IPv4 host."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: IPAddress) -> str | None:
    """Why this address may not receive webhooks (`loopback`, `private`, ...), or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        kind = address_kind(inner)
        return f"{kind} (as {inner})" if kind else None
    for kind in ("unspecified", "loopback", "link-local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind.replace('-', '_')}"):
            return kind
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:  # shared address space (100.64/10), benchmarking, documentation ranges ...
        return "not globally routable"
    return None


def check_address(ip: IPAddress, allow: Sequence[IPNetwork]) -> None:
    if any(ip.version == net.version and ip in net for net in allow):
        return
    kind = address_kind(ip)
    if kind is not None:
        raise UnsafeTarget(
            f"must not point to a loopback, private, link-local, multicast, reserved or unspecified address "
            f"({ip} is {kind}); {ALLOW_HINT}"
        )


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, in any notation a resolver accepts (127.1, 0x7f000001, 2130706433)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        pass
    try:  # inet_aton takes the legacy shorthand, octal and hex forms that getaddrinfo would also take
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except OSError:
        return None


def check_url_shape(raw: str) -> httpx.URL:
    """What can be checked without a resolver: scheme, host, userinfo, literal and local addresses."""
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise UnsafeTarget(f"must be an absolute http or https URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise UnsafeTarget("must be an absolute http or https URL with a host")
    if url.userinfo:
        raise UnsafeTarget("must not carry a user name or password (sign-in data would be sent to the receiver)")
    return url


def _is_local_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name in LOCAL_NAMES or name.endswith(".localhost")


def resolve(url: httpx.URL, allow: Sequence[IPNetwork], timeout: float) -> list[IPAddress]:
    """Every address the URL's host resolves to, each checked; raises UnsafeTarget or OSError."""
    host = url.host
    if (literal := literal_address(host)) is not None:
        check_address(literal, allow)
        return [literal]
    if _is_local_name(host) and not allow:
        raise UnsafeTarget(f"must not point to this host ({host!r} names the local machine); {ALLOW_HINT}")
    port = url.port or (443 if url.scheme == "https" else 80)
    future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout as exc:
        raise OSError(f"resolving {host!r} took longer than {timeout:g} s") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    for ip in addresses:  # every one: a resolver may hand out a public and a private address together
        check_address(ip, allow)
    return addresses


def check_at_submit(raw: str, allow: Sequence[IPNetwork], timeout: float = 2.0) -> str:
    """The URL to store, or UnsafeTarget. A name that does not resolve now is accepted: it is checked again,
    resolved, before every delivery."""
    url = check_url_shape(raw)
    with contextlib.suppress(OSError):
        resolve(url, allow, timeout)
    return str(url)


def target_for_sending(raw: str, allow: Sequence[IPNetwork], timeout: float) -> Target:
    """Resolves and checks; the sender connects to the returned address, so a second lookup (DNS rebinding)
    cannot send it elsewhere."""
    url = check_url_shape(raw)
    addresses = resolve(url, allow, timeout)
    return Target(url, str(addresses[0]))

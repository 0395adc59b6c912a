"""Which network addresses the gateway may fetch from on a stranger's behalf.

Only public unicast addresses. Refused: loopback (unless local development allows it),
private, shared (CGNAT), link-local, multicast, reserved, unspecified, documentation
ranges, and the cloud metadata services, also when an IPv6 address carries one of those
IPv4 addresses inside it (IPv4-mapped, 6to4, Teredo, NAT64).
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services answer with credentials; most are link-local or private anyway and
# refused as such, but they are named so that no allowance ever lets them through.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",    # AWS ECS task metadata
    "169.254.169.123",  # AWS time sync
    "fd00:ec2::254",    # AWS over IPv6
    "fd00:ec2::23",     # AWS DNS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refusal(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` must not be fetched from, or None when it may be."""
    if isinstance(address, ipaddress.IPv6Address):
        translated = _translated_ipv4(address)
        if translated is not None:  # the connection goes to that IPv4 address
            found = refusal(translated, allow_loopback=allow_loopback)
            return None if found is None else f"{found} inside an IPv6 address"
        for inner in _tunnelled_ipv4(address):
            found = refusal(inner, allow_loopback=allow_loopback)
            if found is not None:
                return f"{found} inside an IPv6 address"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _translated_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses stand for
    an IPv4 address: theirs is the verdict."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """6to4 and Teredo carry IPv4 addresses that a relay may reach."""
    found = [address.sixtofour] if address.sixtofour is not None else []
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def parse_address(text: str) -> IPAddress | None:
    """The address a URL host names literally (``[::1]`` included), else None."""
    host = text.strip("[]")
    host = host.split("%", 1)[0]  # a zone index (fe80::1%eth0) names a link-local address
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None

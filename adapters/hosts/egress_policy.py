"""Which addresses functions may connect to: FUNCTIONS_EGRESS and FUNCTIONS_EGRESS_ALLOW.

Pure decisions on an (address, port) that a host is about to connect or send to. The guard
(adapters/hosts/egress_guard.py) asks them for every connect and addressed send of every host, after the
address has been copied out of the host's memory, so what is judged is what is connected: a DNS name that
resolves to loopback, or a redirect to the metadata endpoint, meets the same check as a literal address.
"""

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence

from attrs import field, frozen

PUBLIC, NONE, ALL = "public", "none", "all"
MODES = (PUBLIC, NONE, ALL)
DNS_PORT = 53
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What `public` refuses, with the words an error uses. 255.255.255.255 is inside 240.0.0.0/4.
REFUSED_NETWORKS: tuple[tuple[str, Network], ...] = tuple(
    (why, ipaddress.ip_network(cidr))
    for why, cidr in (
        ("a loopback address", "127.0.0.0/8"),
        ("an unspecified address (it reaches this machine)", "0.0.0.0/8"),
        ("a link-local address (the cloud metadata endpoint lives there)", "169.254.0.0/16"),
        ("a private address", "10.0.0.0/8"),
        ("a private address", "172.16.0.0/12"),
        ("a private address", "192.168.0.0/16"),
        ("a shared (carrier-grade NAT) address", "100.64.0.0/10"),
        ("an IETF protocol address", "192.0.0.0/24"),
        ("a multicast address", "224.0.0.0/4"),
        ("a reserved or broadcast address", "240.0.0.0/4"),
        ("a loopback address", "::1/128"),
        ("an unspecified address (it reaches this machine)", "::/128"),
        ("a link-local address", "fe80::/10"),
        ("a site-local address", "fec0::/10"),
        ("a unique-local (private) address", "fc00::/7"),
        ("a multicast address", "ff00::/8"),
        ("a discard-only address", "100::/64"),
        ("a Teredo address (it hides an IPv4 address)", "2001::/32"),
        ("a local NAT64 address", "64:ff9b:1::/48"),
    )
)
# IPv6 ranges that carry an IPv4 address, judged by that address: mapped, compatible, NAT64 and 6to4.
MAPPED = ipaddress.ip_network("::ffff:0:0/96")
COMPATIBLE = ipaddress.ip_network("::/96")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


@frozen
class AllowRule:
    """One FUNCTIONS_EGRESS_ALLOW entry: a host name or a network, and a port (None: any port)."""

    host: str | None
    network: Network | None
    port: int | None

    def __str__(self) -> str:
        where = self.host or str(self.network)
        if self.network is not None and self.network.version == 6 and self.network.prefixlen == 128:
            where = f"[{self.network.network_address}]"
        return f"{where}:{'*' if self.port is None else self.port}"


def parse_allow(raw: str) -> tuple[AllowRule, ...]:
    """`host:port,cidr:port,[v6]:port,...`, port a number or `*`; ValueError says which entry is wrong."""
    return tuple(_parse_entry(entry.strip()) for entry in raw.split(",") if entry.strip())


def _parse_entry(entry: str) -> AllowRule:
    expected = (
        f"expected host:port, address:port, cidr:port or [ipv6]:port (port a number or *); not {entry!r}"
    )
    where, colon, port_text = entry.rpartition(":")
    if not colon or not where:
        raise ValueError(expected)
    if port_text == "*":
        port = None
    elif port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError(f"{expected} (ports are 1 to 65535)")
    if where.startswith("[") and where.endswith("]"):
        where = where[1:-1]
    try:
        return AllowRule(None, ipaddress.ip_network(where, strict=False), port)
    except ValueError:
        pass
    label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    if ":" in where or not re.fullmatch(rf"{label}(\.{label})*\.?", where):
        raise ValueError(expected)
    return AllowRule(where.lower().rstrip("."), None, port)


@frozen
class Verdict:
    allowed: bool
    reason: str  # why it is refused, or which rule allowed it


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in MAPPED or address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in COMPATIBLE and int(address) > 1:  # ::1 and :: are IPv6's own
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def refused_range(address: Address) -> str | None:
    """Why `public` refuses this address by its range alone, or None."""
    inner = embedded_ipv4(address)
    if inner is not None:
        why = refused_range(inner)
        return f"{why} (as {address})" if why else None
    for why, network in REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return why
    return None


def _no_addresses() -> frozenset[Address]:
    return frozenset()


@frozen
class EgressPolicy:
    """The decision for one (address, port); the sources of local facts are passed in, so it stays pure."""

    mode: str = PUBLIC
    allow: Sequence[AllowRule] = ()
    # Every address of this machine: the service's own listening addresses are among them, whatever HOST is.
    local_addresses: Callable[[], frozenset[Address]] = field(default=_no_addresses)
    # The resolvers of /etc/resolv.conf: reachable on port 53, or no DNS name would resolve.
    nameservers: Callable[[], frozenset[Address]] = field(default=_no_addresses)
    # The addresses FUNCTIONS_EGRESS_ALLOW's host names resolve to now.
    resolved: Callable[[str], frozenset[Address]] = field(default=lambda host: frozenset())

    def __attrs_post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"egress mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    def decide(self, address: Address, port: int) -> Verdict:
        address = _plain(address)
        if self.mode == ALL:
            return Verdict(True, "FUNCTIONS_EGRESS=all")
        for rule in self.allow:
            if self._matches(rule, address, port):
                return Verdict(True, f"FUNCTIONS_EGRESS_ALLOW={rule}")
        if self.mode == NONE:
            return Verdict(False, "FUNCTIONS_EGRESS=none allows no network at all")
        if port == DNS_PORT and address in self.nameservers():
            return Verdict(True, "a nameserver of /etc/resolv.conf")
        why = refused_range(address)
        if why is None and address in self.local_addresses():
            why = "an address of this machine (the service itself listens there)"
        if why is not None:
            return Verdict(False, f"{address} is {why}")
        return Verdict(True, "a public address")

    def _matches(self, rule: AllowRule, address: Address, port: int) -> bool:
        if rule.port is not None and rule.port != port:
            return False
        if rule.network is not None:
            return address.version == rule.network.version and address in rule.network
        return rule.host is not None and address in self.resolved(rule.host)

    def describe(self) -> str:
        """The policy in a sentence, for /sys/healthcheck."""
        allowed = f"; allowed: {', '.join(map(str, self.allow))}" if self.allow else ""
        if self.mode == NONE:
            return f"none: no network{allowed}"
        if self.mode == ALL:
            return "all: unrestricted"
        return (
            "public: loopback, link-local, private, shared, multicast and reserved ranges and this machine's "
            f"own addresses are refused{allowed}"
        )


def _plain(address: Address) -> Address:
    """An IPv4-mapped address is the IPv4 address the kernel connects to; a scope (`fe80::1%eth0`) is
    left out of comparisons."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id:
            return ipaddress.IPv6Address(int(address))
    return address


def resolve(host: str) -> frozenset[Address]:
    """The addresses a FUNCTIONS_EGRESS_ALLOW host name has now; empty if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return frozenset()
    return frozenset(_plain(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos)


def parse_addresses(lines: Iterable[str]) -> frozenset[Address]:
    found: set[Address] = set()
    for text in lines:
        try:
            found.add(ipaddress.ip_address(text.split("%")[0]))
        except ValueError:
            continue
    return frozenset(found)

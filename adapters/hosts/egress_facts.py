"""What the machine is, for the egress policy: its own addresses, its resolvers, and the addresses of
FUNCTIONS_EGRESS_ALLOW's host names; and the policy built on them."""

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import define, field

from adapters.hosts.egress_policy import (
    PUBLIC,
    Address,
    AllowRule,
    EgressPolicy,
    parse_addresses,
    resolve,
)

RESOLVE_EVERY_S = 30.0  # how often the allowed host names are resolved again


@define
class MachineFacts:
    """This machine's addresses and nameservers, read from /proc and /etc and kept a few seconds; and the
    addresses of FUNCTIONS_EGRESS_ALLOW's host names, resolved on a thread of their own every 30 s, so a
    slow resolver never holds up the guard (a name not resolved yet matches nothing)."""

    ttl_s: float = 5.0
    _cache: dict[str, tuple[float, frozenset[Address]]] = field(factory=dict)
    _resolving: set[str] = field(factory=set)

    def local_addresses(self) -> frozenset[Address]:
        return self._kept("local", _local_addresses)

    def nameservers(self) -> frozenset[Address]:
        return self._kept("dns", _nameservers)

    def resolved(self, host: str) -> frozenset[Address]:
        kept = self._cache.get(f"host:{host}")
        if (kept is None or time.monotonic() - kept[0] > RESOLVE_EVERY_S) and host not in self._resolving:
            self._resolving.add(host)
            threading.Thread(target=self._resolve, args=(host,), name="egress-resolve", daemon=True).start()
        return kept[1] if kept else frozenset()

    def _resolve(self, host: str) -> None:
        try:
            self._cache[f"host:{host}"] = (time.monotonic(), resolve(host))
        finally:
            self._resolving.discard(host)

    def _kept(self, key: str, read: Callable[[], frozenset[Address]]) -> frozenset[Address]:
        now = time.monotonic()
        kept = self._cache.get(key)
        if kept is None or now - kept[0] > self.ttl_s:
            kept = self._cache[key] = (now, read())
        return kept[1]


def machine_policy(mode: str = PUBLIC, allow: Sequence[AllowRule] = ()) -> EgressPolicy:
    """The policy of FUNCTIONS_EGRESS and FUNCTIONS_EGRESS_ALLOW, with this machine's facts. The allowed
    host names start resolving now, at start-up, not at the first connect."""
    facts = MachineFacts()
    for rule in allow:
        if rule.host is not None:
            facts.resolved(rule.host)
    return EgressPolicy(mode, tuple(allow), facts.local_addresses, facts.nameservers, facts.resolved)


def _local_addresses() -> frozenset[Address]:
    """IPv4 addresses the kernel treats as local (/proc/net/fib_trie) and every IPv6 interface address."""
    texts: list[str] = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:], strict=False):
        if line.strip() == "/32 host LOCAL":
            texts.append(previous.strip().split()[-1])
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            texts.append(":".join(raw[i : i + 4] for i in range(0, 32, 4)))
    except OSError:
        pass
    return parse_addresses(texts)


def _nameservers() -> frozenset[Address]:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return frozenset()
    return parse_addresses(line.split()[1] for line in lines if line.startswith("nameserver") and " " in line)

"""FUNCTIONS_EGRESS and FUNCTIONS_EGRESS_ALLOW: the decision on one (address, port), and the settings."""

import errno
import ipaddress
import socket
import struct
import time

import pytest

from adapters.hosts.egress_policy import ALL, NONE, PUBLIC, EgressPolicy, embedded_ipv4, parse_allow
from adapters.hosts.seccomp_notify import Refused, sockaddr
from entrypoints.settings import SettingsError, load_settings

ip = ipaddress.ip_address

REFUSED = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "169.254.169.254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]
PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", "203.0.113.10", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_public_refuses_every_internal_range_and_names_it(address: str) -> None:
    verdict = EgressPolicy(PUBLIC).decide(ip(address), 80)
    assert not verdict.allowed
    judged = ip(address)
    if isinstance(judged, ipaddress.IPv6Address) and judged.ipv4_mapped is not None:
        judged = judged.ipv4_mapped  # connected as the IPv4 address it carries
    assert verdict.reason.startswith(f"{judged} is ")


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_allows_public_addresses(address: str) -> None:
    assert EgressPolicy(PUBLIC).decide(ip(address), 443).allowed


def test_the_machines_own_addresses_are_refused_whatever_they_are() -> None:
    own = frozenset({ip("203.0.113.7"), ip("2001:db8::7")})
    policy = EgressPolicy(PUBLIC, local_addresses=lambda: own)
    assert "an address of this machine" in policy.decide(ip("203.0.113.7"), 4000).reason
    assert not policy.decide(ip("2001:db8::7"), 4000).allowed
    assert not policy.decide(ip("::ffff:203.0.113.7"), 4000).allowed  # IPv4-mapped: the same address
    assert policy.decide(ip("203.0.113.8"), 4000).allowed


def test_nameservers_are_reachable_on_port_53_only() -> None:
    policy = EgressPolicy(PUBLIC, nameservers=lambda: frozenset({ip("10.255.255.53")}))
    assert policy.decide(ip("10.255.255.53"), 53).allowed
    assert not policy.decide(ip("10.255.255.53"), 80).allowed
    assert not policy.decide(ip("10.255.255.54"), 53).allowed


def test_none_refuses_everything_dns_included() -> None:
    policy = EgressPolicy(NONE, nameservers=lambda: frozenset({ip("10.255.255.53")}))
    for address, port in (("8.8.8.8", 443), ("10.255.255.53", 53), ("127.0.0.1", 80)):
        verdict = policy.decide(ip(address), port)
        assert not verdict.allowed and "FUNCTIONS_EGRESS=none" in verdict.reason


def test_all_allows_everything() -> None:
    policy = EgressPolicy(ALL)
    assert all(policy.decide(ip(address), 80).allowed for address in REFUSED)


def test_the_allow_list_opens_named_ports_of_internal_addresses() -> None:
    rules = parse_allow("10.0.0.0/8:5432, 127.0.0.1:6379, [fd00::5]:*, db.internal:443")
    policy = EgressPolicy(PUBLIC, rules, resolved=lambda host: frozenset({ip("192.168.7.7")}))
    assert policy.decide(ip("10.9.8.7"), 5432).allowed
    assert not policy.decide(ip("10.9.8.7"), 5433).allowed
    assert policy.decide(ip("127.0.0.1"), 6379).allowed
    assert not policy.decide(ip("127.0.0.1"), 4000).allowed
    assert policy.decide(ip("fd00::5"), 1).allowed
    assert policy.decide(ip("192.168.7.7"), 443).allowed
    assert not policy.decide(ip("192.168.7.8"), 443).allowed
    assert policy.decide(ip("10.1.1.1"), 5432).reason == "FUNCTIONS_EGRESS_ALLOW=10.0.0.0/8:5432"
    assert EgressPolicy(NONE, rules).decide(ip("127.0.0.1"), 6379).allowed


def test_mapped_and_embedded_addresses_are_judged_by_their_ipv4_address() -> None:
    assert embedded_ipv4(ip("::ffff:10.0.0.1")) == ip("10.0.0.1")
    assert embedded_ipv4(ip("2002:a00:1::")) == ip("10.0.0.1")
    assert embedded_ipv4(ip("::1")) is None
    assert not EgressPolicy(PUBLIC).decide(ip("::ffff:127.0.0.1"), 6379).allowed
    assert EgressPolicy(PUBLIC, parse_allow("127.0.0.1:6379")).decide(ip("::ffff:127.0.0.1"), 6379).allowed


@pytest.mark.parametrize(
    "raw, why",
    [
        ("localhost", "expected host:port"),
        ("10.0.0.0/8", "expected host:port"),
        ("db:0", "ports are 1 to 65535"),
        ("db:65536", "ports are 1 to 65535"),
        ("db:http", "ports are 1 to 65535"),
        ("bad_name!:80", "expected host:port"),
        (":80", "expected host:port"),
    ],
)
def test_a_bad_allow_entry_names_the_variable_and_the_entry(raw: str, why: str) -> None:
    with pytest.raises(SettingsError, match="FUNCTIONS_EGRESS_ALLOW") as caught:
        load_settings({"FUNCTIONS_EGRESS_ALLOW": raw})
    assert why in str(caught.value)


def test_settings_default_to_public_and_refuse_an_unknown_mode() -> None:
    assert load_settings({}).egress == PUBLIC
    assert load_settings({"FUNCTIONS_EGRESS": "None"}).egress == NONE
    with pytest.raises(SettingsError, match="FUNCTIONS_EGRESS='open' is invalid: expected one of public"):
        load_settings({"FUNCTIONS_EGRESS": "open"})
    rules = load_settings({"FUNCTIONS_EGRESS_ALLOW": "api.internal:8080,10.0.0.0/24:*"}).egress_allow
    assert [str(rule) for rule in rules] == ["api.internal:8080", "10.0.0.0/24:*"]


def test_sockaddr_is_read_as_the_kernel_reads_it() -> None:
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 4000) + bytes([127, 0, 0, 1]) + bytes(8)
    assert sockaddr(v4) == (ip("127.0.0.1"), 4000)
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 443, 0) + ip("::1").packed + bytes(4)
    assert sockaddr(v6) == (ip("::1"), 443)
    assert sockaddr(struct.pack("=H", socket.AF_UNSPEC) + bytes(14)) is None
    for short, code in (
        (v4[:8], errno.EINVAL),
        (b"\x01", errno.EINVAL),
        (b"\x01\x00/tmp/x", errno.EAFNOSUPPORT),
    ):
        with pytest.raises(Refused) as caught:
            sockaddr(short)
        assert caught.value.code == code


def test_allowed_host_names_resolve_on_a_thread_of_their_own_never_in_the_guards_call() -> None:
    from adapters.hosts.egress_facts import MachineFacts

    facts = MachineFacts()
    facts.resolved("localhost")  # starts the resolution and answers at once with what is known
    deadline = time.monotonic() + 10
    while not facts.resolved("localhost") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ip("127.0.0.1") in facts.resolved("localhost")
    assert facts.resolved("no-such-name.invalid") == frozenset()  # unresolved: matches nothing

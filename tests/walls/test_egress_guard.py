"""The egress wall attacked with raw system calls from a launched host: connect, sendto, sendmsg,
sendmmsg, Unix sockets, TCP Fast Open, SCTP, and a thread rewriting the address during the check.

Every listener is on 127.0.0.1: the host may reach the allowed port (FUNCTIONS_EGRESS_ALLOW) and no other.
"""

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.hosts.egress_facts import machine_policy
from adapters.hosts.egress_policy import ALL, PUBLIC, parse_allow
from adapters.hosts.walls import STRICT, HostPlan, Wall, WallMissing, Walls, probe
from tests.walls.conftest import SYSTEM_PYTHON, run_launched

OFFERED = probe()
PROBE = Path(__file__).resolve().parent / "egress_probe.py"
pytestmark = pytest.mark.skipif(not Walls().offered["egress"].on, reason=Walls().offered["egress"].detail)


class Listener:
    """A TCP and a UDP socket on one loopback port, counting what reaches them."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.connections = 0
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept), threading.Thread(target=self._receive)]
        for thread in self._threads:
            thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.udp.recv(65536))
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.tcp.close()
        self.udp.close()


@pytest.fixture(scope="module")
def attacked() -> Iterator[dict[str, Any]]:
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"no {SYSTEM_PYTHON} to run the probe with")
    allowed, refused = Listener(), Listener()
    folder = Path(tempfile.mkdtemp(prefix="egress-unix-"))
    folder.chmod(0o755)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(folder / "service.sock"))
    os.chmod(folder / "service.sock", 0o777)  # only the egress wall stands between the host and it
    unix.listen()
    try:
        walls = Walls(egress=machine_policy(PUBLIC, parse_allow(f"127.0.0.1:{allowed.port}")))
        plan = HostPlan("probe", SYSTEM_PYTHON, [str(PROBE.parent)], address_space_mb=1024)
        argv = [
            SYSTEM_PYTHON,
            "-I",
            str(PROBE),
            str(allowed.port),
            str(refused.port),
            str(folder / "service.sock"),
        ]
        done = run_launched(walls.launch(plan, argv), timeout_s=60)
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        allowed.close()
        refused.close()
        report["allowed_connections"], report["refused_connections"] = (
            allowed.connections,
            refused.connections,
        )
        report["allowed_datagrams"], report["refused_datagrams"] = allowed.datagrams, refused.datagrams
        report["refusals"] = walls.guard.refusals
        deadline = time.monotonic() + 10
        while walls.guard.hosts and time.monotonic() < deadline:
            time.sleep(0.05)
        report["guarded_after_exit"] = walls.guard.hosts
        yield report
    finally:
        allowed.close()
        refused.close()
        unix.close()
        (folder / "service.sock").unlink(missing_ok=True)
        folder.rmdir()


def test_a_refused_connect_fails_at_once_and_reaches_nothing(attacked: dict[str, Any]) -> None:
    assert attacked["tcp_refused"] == "refused: EACCES"
    assert attacked["tcp_refused_nonblocking"] == "refused: EACCES"
    assert attacked["refused_connections"] == 0


def test_an_allowed_connect_works_blocking_and_not(attacked: dict[str, Any]) -> None:
    assert attacked["tcp_allowed"] == "allowed"
    assert attacked["tcp_allowed_nonblocking"] == "allowed"
    assert attacked["allowed_connections"] >= 2


def test_datagrams_go_only_where_allowed_whichever_call_sends_them(attacked: dict[str, Any]) -> None:
    for call in ("udp_sendto", "udp_connect", "udp_sendmsg", "udp_sendmmsg"):
        assert attacked[f"{call}_refused"] == "refused: EACCES", call
    assert attacked["udp_sendto_allowed"] == "allowed: 8"
    assert attacked["udp_connect_allowed"] == "allowed: 18"
    assert attacked["udp_sendmsg_allowed"] == "allowed: 7"
    assert attacked["udp_sendmmsg_allowed"] == "allowed: [2, 5, 7]"  # each msg_len written back
    assert sorted(attacked["allowed_datagrams"]) == sorted(
        [b"datagram", b"connected datagram", b"sendmsg", b"first", b"second!"]
    )
    assert attacked["refused_datagrams"] == []


def test_unix_sockets_fast_open_and_sctp_are_refused(attacked: dict[str, Any]) -> None:
    assert attacked["unix"] == "refused: EACCES"
    assert attacked["fast_open"] in ("refused: EOPNOTSUPP", "refused: ENOTSUP")  # one number on Linux
    assert attacked["sctp"] in ("refused: EPROTONOSUPPORT",)


def test_name_resolution_still_asks_the_kernel_over_netlink(attacked: dict[str, Any]) -> None:
    assert attacked["addrconfig"] == "allowed: ['127.0.0.1']"


def test_rewriting_the_address_during_the_check_never_reaches_the_refused_port(
    attacked: dict[str, Any],
) -> None:
    race = attacked["race"]
    assert race["connected"] + race["refused"] == 300
    assert race["connected"] > 0 and race["refused"] > 0  # the flipping thread really raced
    assert attacked["refused_connections"] == 0


def test_the_guard_lets_go_of_a_host_that_ended(attacked: dict[str, Any]) -> None:
    assert attacked["guarded_after_exit"] == 0  # its listener hung up: dropped, not polled forever
    assert attacked["refusals"] >= 10


def test_strict_refuses_to_start_a_host_without_the_egress_wall() -> None:
    offered = {**OFFERED, "egress": Wall(False, "simulated: no seccomp user notification")}
    walls = Walls(STRICT, offered=offered)
    with pytest.raises(WallMissing, match="egress: simulated: no seccomp user notification"):
        walls.launch(HostPlan("probe", SYSTEM_PYTHON, []), [SYSTEM_PYTHON])


def test_egress_all_is_a_choice_strict_accepts_and_the_report_names() -> None:
    walls = Walls(STRICT, egress=machine_policy(ALL)) if all(w.on for n, w in OFFERED.items()) else None
    if walls is None:
        pytest.skip("strict needs every other wall on this machine")
    launch = walls.launch(HostPlan("probe", SYSTEM_PYTHON, []), [SYSTEM_PYTHON])
    launch.cleanup()
    assert launch.pass_fds == ()  # no guard, no channel
    report = walls.report()["hosts"]
    assert isinstance(report, dict)
    assert report["probe"]["egress"] == {"on": False, "reason": walls.offered["egress"].detail}
    assert "FUNCTIONS_EGRESS=all" in walls.offered["egress"].detail


def test_the_report_says_how_egress_is_enforced() -> None:
    walls = Walls(egress=machine_policy(PUBLIC, parse_allow("10.0.0.0/8:5432")))
    walls.launch(HostPlan("probe", SYSTEM_PYTHON, []), [SYSTEM_PYTHON]).cleanup()
    report = walls.report()["hosts"]
    assert isinstance(report, dict)
    egress = report["probe"]["egress"]
    assert egress["on"] is True
    assert "seccomp user notification" in egress["detail"] and "allowed: 10.0.0.0/8:5432" in egress["detail"]

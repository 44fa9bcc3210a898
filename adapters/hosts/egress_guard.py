"""The egress guard: every connect and addressed send of every host, decided by the service.

The launcher (runtimes/launcher.py) adds seccomp rules that turn `connect`, `sendto` with an address,
`sendmsg` and `sendmmsg` into user notifications, and hands the filter's listener to this guard before the
host starts. One thread of the service answers them:

- it copies the target address (and for sends, the bytes) out of the host's memory;
- it judges the address with the EgressPolicy;
- for an allowed call it performs the call itself, on a duplicate of the host's socket (pidfd_getfd), with
  the bytes it judged, and answers the host with the result.

The host's own call never runs, so there is no window between check and use: a thread that rewrites the
address after the check, or swaps the descriptor for another socket, changes nothing. A refused call fails
at once with EACCES, which the runtimes turn into an error naming FUNCTIONS_EGRESS.

The kernel's side (notifications, pidfd_getfd, the host's memory) is in seccomp_notify.py; the machine's
addresses and resolvers the policy judges with are in egress_facts.py.
"""

import errno
import functools
import logging
import os
import select
import selectors
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from attrs import define

from adapters.hosts import seccomp_notify as notify
from adapters.hosts.egress_policy import Address, EgressPolicy, Verdict
from adapters.hosts.seccomp_notify import (
    INET,
    MAX_SEND,
    MAX_SOCKADDR,
    MMSGHDR_SIZE,
    MSGHDR,
    GuardedHost,
    Refused,
)

log = logging.getLogger("functions.egress")

MAX_BATCH = 64  # messages of one sendmmsg
MSG_FASTOPEN = 0x20000000
SWEEP_S = 2.0  # how often pending connects of hosts that went away are dropped
LOGGED_REFUSALS = 20


@functools.cache
def probe() -> str | None:
    """Why this machine cannot run the guard, or None: seccomp notification, and pidfd_getfd on a child
    (which ptrace rules such as Yama's scope 2 may refuse). Asked once: it starts a short process."""
    try:
        child = subprocess.Popen(["sleep", "10"], stdin=subprocess.DEVNULL)
    except OSError as exc:
        return f"cannot start a process to try pidfd_getfd on ({exc})"
    try:
        pidfd = os.pidfd_open(child.pid)
        try:
            os.close(notify.pidfd_getfd(pidfd, 0))
        finally:
            os.close(pidfd)
    except (AttributeError, OSError) as exc:
        return f"the service cannot copy its hosts' descriptors (pidfd_getfd: {exc})"
    finally:
        child.kill()
        child.wait()
    if not Path("/proc/sys/kernel/seccomp/actions_avail").exists():
        return "the kernel does not say which seccomp actions it offers"
    actions = Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    if "user_notif" not in actions:
        return "the kernel offers no seccomp user notification"
    return None


@define
class _Pending:
    """A blocking connect the guard made non-blocking: answered when the socket is writable."""

    host: GuardedHost
    notification: int
    fd: int


class EgressGuard:
    """Answers the seccomp notifications of every host this process starts, on one thread."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.refusals = 0
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_read, selectors.EVENT_READ, ("wake",))
        self._incoming: list[tuple[int, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def channel(self) -> tuple[socket.socket, socket.socket]:
        """A pair: the guard's end, and the end the launcher inherits to hand over its listener."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.set_inheritable(True)
        return ours, theirs

    def adopt(self, pid: int, ours: socket.socket) -> None:
        """Take the listener of the launcher `pid`, which waits on the other end of `ours` until then."""
        with self._lock:
            self._incoming.append((pid, ours))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="egress-guard", daemon=True)
                self._thread.start()
        os.write(self._wake_write, b"!")

    @property
    def hosts(self) -> int:
        """How many hosts' listeners the guard holds (a host that ended is let go)."""
        return sum(1 for key in list(self._selector.get_map().values()) if key.data[0] == "listener")

    # -- the loop -------------------------------------------------------------------------------------

    def _serve(self) -> None:
        last_sweep = time.monotonic()
        while True:
            for key, _events in self._selector.select(timeout=SWEEP_S):
                kind, *rest = key.data
                try:
                    if kind == "wake":
                        self._take_incoming()
                    elif kind == "channel":
                        self._handshake(key.fileobj, *rest)  # type: ignore[arg-type]
                    elif kind == "listener":
                        self._notified(rest[0])
                    elif kind == "pending":
                        self._finish_connect(rest[0])
                except Exception:  # the guard must outlive any one host's call
                    log.exception("egress guard: %s failed", kind)
            if time.monotonic() - last_sweep > SWEEP_S:
                try:
                    self._sweep()
                except Exception:
                    log.exception("egress guard: the sweep failed")
                last_sweep = time.monotonic()

    def _take_incoming(self) -> None:
        while True:
            try:
                if not os.read(self._wake_read, 64):
                    break
            except BlockingIOError:
                break
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for pid, ours in incoming:
            self._selector.register(ours, selectors.EVENT_READ, ("channel", pid))

    def _handshake(self, ours: socket.socket, pid: int) -> None:
        """The launcher sends its listener's descriptor number; the guard copies it, then says go."""
        self._selector.unregister(ours)
        with ours:
            text = ours.recv(32)
            if not text.strip().isdigit():
                return  # the launcher failed before: nothing to guard
            pidfd = os.pidfd_open(pid)
            try:
                listener = notify.pidfd_getfd(pidfd, int(text))
            except OSError:
                os.close(pidfd)
                raise
            os.set_blocking(listener, False)
            host = GuardedHost(pid, pidfd, listener)
            self._selector.register(listener, selectors.EVENT_READ, ("listener", host))
            ours.sendall(b"go\n")

    def _notified(self, host: GuardedHost) -> None:
        try:
            call = notify.receive(host)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EAGAIN, errno.EINTR) and not notify.exited(host.pidfd):
                return  # the caller was interrupted meanwhile
            self._drop(host)  # the host has gone: its filter has no process left (the listener hangs up)
            return
        notification = call.id
        try:
            if call.name is None:
                raise Refused(errno.ENOSYS)
            result = getattr(self, f"_{call.name}")(host, notification, *call.args)
        except Refused as refused:
            notify.answer(host, notification, 0, refused.code)
            if refused.why:
                self.refusals += 1
                host.refused += 1
                # A function refused in a loop would flood the log: its first refusals and then every 1000th.
                loud = not refused.quiet and (host.refused <= LOGGED_REFUSALS or host.refused % 1000 == 0)
                log.log(
                    logging.INFO if loud else logging.DEBUG,
                    "egress refused (host %d, %d so far): %s",
                    host.pid,
                    host.refused,
                    refused.why,
                )
            return
        except OSError as exc:
            notify.answer(host, notification, 0, exc.errno or errno.EIO)
            return
        if result is not None:
            notify.answer(host, notification, result, 0)

    def _drop(self, host: GuardedHost) -> None:
        self._selector.unregister(host.listener)
        for fd in (host.listener, host.pidfd, host.mem):
            if fd is not None:
                os.close(fd)
        for key in list(self._selector.get_map().values()):
            if key.data[0] == "pending" and key.data[1].host is host:
                self._selector.unregister(key.fileobj)
                os.close(key.data[1].fd)

    def _sweep(self) -> None:
        """Pending connects whose caller is gone (killed, or the call was interrupted) are dropped."""
        for key in list(self._selector.get_map().values()):
            if key.data[0] == "pending" and not notify.waiting(key.data[1].host, key.data[1].notification):
                self._selector.unregister(key.fileobj)
                os.close(key.data[1].fd)

    # -- the calls ------------------------------------------------------------------------------------

    def _connect(
        self, host: GuardedHost, notification: int, fd: int, address: int, length: int, *_: int
    ) -> int | None:
        dup, family, _kind = notify.socket_of(host, fd)
        try:
            raw = notify.read(host, address, min(length, MAX_SOCKADDR))
            notify.checked(host, notification)
            if family not in INET:
                raise Refused(errno.EACCES, f"connect on a {_family_name(family)} socket", quiet=True)
            self._judge(raw)
            blocking = os.get_blocking(dup)
            if blocking:
                os.set_blocking(dup, False)  # the guard never waits on a host's connect
            try:
                code = notify.connect(dup, raw)
            finally:
                if blocking:
                    os.set_blocking(dup, True)
            if blocking and code == errno.EINPROGRESS and select.select([], [dup], [], 0)[1]:
                # Made at once (loopback, a near peer): no trip through the loop.
                code = notify.socket_error(dup)
            if blocking and code == errno.EINPROGRESS:
                pending = _Pending(host, notification, dup)
                self._selector.register(dup, selectors.EVENT_WRITE, ("pending", pending))
                dup = -1
                return None  # answered when the connection is made or fails
            if code:
                raise Refused(code)
            return 0
        finally:
            if dup >= 0:
                os.close(dup)

    def _finish_connect(self, pending: _Pending) -> None:
        self._selector.unregister(pending.fd)
        try:
            code = notify.socket_error(pending.fd)
        finally:
            os.close(pending.fd)
        notify.answer(pending.host, pending.notification, 0, code)

    def _sendto(
        self,
        host: GuardedHost,
        notification: int,
        fd: int,
        buffer: int,
        size: int,
        flags: int,
        address: int,
        length: int,
    ) -> int:
        dup, family, kind = notify.socket_of(host, fd)
        try:
            raw = notify.read(host, address, min(length, MAX_SOCKADDR))
            data = notify.read(host, buffer, min(size, MAX_SEND))
            notify.checked(host, notification)
            raw = self._destination(family, kind, flags, raw)
            return notify.send(dup, data, flags, raw)
        finally:
            os.close(dup)

    def _sendmsg(
        self, host: GuardedHost, notification: int, fd: int, message: int, flags: int, *_: int
    ) -> int:
        dup, family, kind = notify.socket_of(host, fd)
        try:
            raw, data = notify.read_message(host, message)
            notify.checked(host, notification)
            return notify.send(dup, data, flags, self._destination(family, kind, flags, raw))
        finally:
            os.close(dup)

    def _sendmmsg(
        self, host: GuardedHost, notification: int, fd: int, vector: int, count: int, flags: int, *_: int
    ) -> int:
        dup, family, kind = notify.socket_of(host, fd)
        try:
            messages = [
                notify.read_message(host, vector + i * MMSGHDR_SIZE) for i in range(min(count, MAX_BATCH))
            ]
            notify.checked(host, notification)
            sent = 0
            for index, (raw, data) in enumerate(messages):
                try:
                    size = notify.send(dup, data, flags, self._destination(family, kind, flags, raw))
                except Refused:
                    if sent == 0:
                        raise
                    break
                # sendmmsg reports each message's length in its msg_len, which callers check.
                notify.write(host, vector + index * MMSGHDR_SIZE + MSGHDR.size, struct.pack("<I", size))
                sent += 1
            return sent
        finally:
            os.close(dup)

    def _destination(self, family: int, kind: int, flags: int, raw: bytes) -> bytes:
        """The judged address to send to (b"": the socket's own peer, judged when it connected)."""
        if family == socket.AF_NETLINK:
            if raw and raw[4:12] != bytes(8):  # nl_pid, nl_groups: only the kernel itself
                raise Refused(errno.EACCES, "netlink to a process or group")
            return raw
        if family not in INET:
            raise Refused(errno.EACCES, f"send on a {_family_name(family)} socket", quiet=True)
        if kind == socket.SOCK_STREAM and flags & MSG_FASTOPEN:
            raise Refused(errno.EOPNOTSUPP)  # TCP Fast Open: callers fall back to connect
        if raw and kind != socket.SOCK_STREAM:  # a stream socket ignores the address
            self._judge(raw)
            return raw
        return b""

    def _judge(self, raw: bytes) -> None:
        destination = notify.sockaddr(raw)
        if destination is None:
            return  # AF_UNSPEC: dissolves a datagram socket's association
        address, port = destination
        verdict: Verdict = self.policy.decide(address, port)
        if not verdict.allowed:
            raise Refused(errno.EACCES, f"{_show(address, port)}: {verdict.reason}")


def _show(address: Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _family_name(family: int) -> str:
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return f"family {family}"

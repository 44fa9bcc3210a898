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
"""

import ctypes
import errno
import fcntl
import functools
import ipaddress
import logging
import os
import select
import selectors
import socket
import struct
import subprocess
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
    Verdict,
    parse_addresses,
    resolve,
)

log = logging.getLogger("functions.egress")

# <linux/seccomp.h>: struct seccomp_notif (80 bytes) and seccomp_notif_resp (24 bytes), and their ioctls.
NOTIF = struct.Struct("<QIIiIQ6Q")
RESPONSE = struct.Struct("<QqiI")
IOCTL_RECV = 0xC0502100  # SECCOMP_IOWR(0, struct seccomp_notif)
IOCTL_SEND = 0xC0182101  # SECCOMP_IOWR(1, struct seccomp_notif_resp)
IOCTL_ID_VALID = 0x40082102  # SECCOMP_IOW(2, __u64)
SYS_PIDFD_GETFD = 438  # the same number on every architecture
ARCH_X86_64, ARCH_AARCH64 = 0xC000003E, 0xC00000B7
SYSCALLS = {
    ARCH_X86_64: {42: "connect", 44: "sendto", 46: "sendmsg", 307: "sendmmsg"},
    ARCH_AARCH64: {203: "connect", 206: "sendto", 211: "sendmsg", 269: "sendmmsg"},
}
MSGHDR = struct.Struct("<QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
MMSGHDR_SIZE = MSGHDR.size + 8  # then msg_len (u32) and padding
IOVEC = struct.Struct("<QQ")
MAX_SOCKADDR = 128
MAX_SEND = 256 * 1024  # bytes one addressed send may carry (a UDP datagram is at most 64 KiB)
MAX_IOV = 1024
MAX_BATCH = 64  # messages of one sendmmsg
MSG_FASTOPEN = 0x20000000
INET = (socket.AF_INET, socket.AF_INET6)
SWEEP_S = 2.0
LOGGED_REFUSALS = 20
RESOLVE_EVERY_S = 30.0  # how often pending connects of hosts that went away are dropped

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.connect.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc.sendto.argtypes = (
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint32,
)
_libc.sendto.restype = ctypes.c_ssize_t


class Refused(Exception):
    """The call is answered with this errno and never made."""

    def __init__(self, code: int, why: str = "", quiet: bool = False) -> None:
        super().__init__(why or os.strerror(code))
        self.code, self.why = code, why
        self.quiet = quiet  # logged at debug: glibc asks nscd's Unix socket at every start, for one


def pidfd_getfd(pidfd: int, target: int) -> int:
    """A duplicate of descriptor `target` of the process behind `pidfd`."""
    fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(fd)


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
            os.close(pidfd_getfd(pidfd, 0))
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


# -- what the machine is: its own addresses and its resolvers -----------------------------------------


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


# -- the guard ------------------------------------------------------------------------------------------


@define
class _Host:
    pid: int
    pidfd: int
    listener: int
    mem: int | None = None  # /proc/<pid>/mem, opened at the first call (after the exec)
    refused: int = 0


@define
class _Pending:
    """A blocking connect the guard made non-blocking: answered when the socket is writable."""

    host: _Host
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
                listener = pidfd_getfd(pidfd, int(text))
            except OSError:
                os.close(pidfd)
                raise
            os.set_blocking(listener, False)
            host = _Host(pid, pidfd, listener)
            self._selector.register(listener, selectors.EVENT_READ, ("listener", host))
            ours.sendall(b"go\n")

    def _notified(self, host: _Host) -> None:
        buffer = bytearray(NOTIF.size)
        try:
            fcntl.ioctl(host.listener, IOCTL_RECV, buffer, True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EAGAIN, errno.EINTR) and not _exited(host.pidfd):
                return  # the caller was interrupted meanwhile
            self._drop(host)  # the host has gone: its filter has no process left (the listener hangs up)
            return
        notification, _tid, _flags, number, arch, _ip, *args = NOTIF.unpack(buffer)
        name = SYSCALLS.get(arch, {}).get(number)
        try:
            if name is None:
                raise Refused(errno.ENOSYS)
            result = getattr(self, f"_{name}")(host, notification, *args)
        except Refused as refused:
            self._answer(host, notification, 0, refused.code)
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
            self._answer(host, notification, 0, exc.errno or errno.EIO)
            return
        if result is not None:
            self._answer(host, notification, result, 0)

    def _answer(self, host: _Host, notification: int, value: int, code: int) -> None:
        try:
            fcntl.ioctl(host.listener, IOCTL_SEND, RESPONSE.pack(notification, value, -code, 0))
        except OSError:
            pass  # the call was interrupted meanwhile: nobody waits for this answer

    def _drop(self, host: _Host) -> None:
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
            if key.data[0] == "pending" and not self._valid(key.data[1].host, key.data[1].notification):
                self._selector.unregister(key.fileobj)
                os.close(key.data[1].fd)

    # -- reading the host ---------------------------------------------------------------------------

    def _valid(self, host: _Host, notification: int) -> bool:
        try:
            fcntl.ioctl(host.listener, IOCTL_ID_VALID, struct.pack("<Q", notification))
        except OSError:
            return False
        return True

    def _read(self, host: _Host, address: int, size: int) -> bytes:
        if host.mem is None:
            host.mem = os.open(f"/proc/{host.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        data = os.pread(host.mem, size, address) if size else b""
        if len(data) != size:
            raise Refused(errno.EFAULT)
        return data

    def _checked(self, host: _Host, notification: int) -> None:
        """What was read belongs to this very call: the caller still waits in it."""
        if not self._valid(host, notification):
            raise Refused(errno.EINTR)

    def _socket(self, host: _Host, fd: int) -> tuple[int, int, int]:
        """A duplicate of the caller's descriptor `fd`, with its socket family and type."""
        try:
            dup = pidfd_getfd(host.pidfd, fd)
        except OSError as exc:
            raise Refused(exc.errno or errno.EBADF) from None
        try:
            probe = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            raise Refused(errno.ENOTSOCK) from None
        family, kind = int(probe.family), int(probe.type)
        probe.detach()  # the descriptor stays the caller's to close
        return dup, family, kind

    # -- the calls ------------------------------------------------------------------------------------

    def _connect(
        self, host: _Host, notification: int, fd: int, address: int, length: int, *_: int
    ) -> int | None:
        dup, family, _kind = self._socket(host, fd)
        try:
            raw = self._read(host, address, min(length, MAX_SOCKADDR))
            self._checked(host, notification)
            if family not in INET:
                raise Refused(errno.EACCES, f"connect on a {_family_name(family)} socket", quiet=True)
            self._judge(raw)
            blocking = os.get_blocking(dup)
            if blocking:
                os.set_blocking(dup, False)  # the guard never waits on a host's connect
            try:
                code = 0 if _libc.connect(dup, raw, len(raw)) == 0 else ctypes.get_errno()
            finally:
                if blocking:
                    os.set_blocking(dup, True)
            if blocking and code == errno.EINPROGRESS and select.select([], [dup], [], 0)[1]:
                code = _socket_error(dup)  # made at once (loopback, a near peer): no trip through the loop
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
            code = _socket_error(pending.fd)
        finally:
            os.close(pending.fd)
        self._answer(pending.host, pending.notification, 0, code)

    def _sendto(
        self,
        host: _Host,
        notification: int,
        fd: int,
        buffer: int,
        size: int,
        flags: int,
        address: int,
        length: int,
    ) -> int:
        dup, family, kind = self._socket(host, fd)
        try:
            raw = self._read(host, address, min(length, MAX_SOCKADDR))
            data = self._read(host, buffer, min(size, MAX_SEND))
            self._checked(host, notification)
            raw = self._destination(family, kind, flags, raw)
            return self._send(dup, data, flags, raw)
        finally:
            os.close(dup)

    def _sendmsg(self, host: _Host, notification: int, fd: int, message: int, flags: int, *_: int) -> int:
        dup, family, kind = self._socket(host, fd)
        try:
            raw, data = self._message(host, message)
            self._checked(host, notification)
            return self._send(dup, data, flags, self._destination(family, kind, flags, raw))
        finally:
            os.close(dup)

    def _sendmmsg(
        self, host: _Host, notification: int, fd: int, vector: int, count: int, flags: int, *_: int
    ) -> int:
        dup, family, kind = self._socket(host, fd)
        try:
            messages = [self._message(host, vector + i * MMSGHDR_SIZE) for i in range(min(count, MAX_BATCH))]
            self._checked(host, notification)
            sent = 0
            for index, (raw, data) in enumerate(messages):
                try:
                    size = self._send(dup, data, flags, self._destination(family, kind, flags, raw))
                except Refused:
                    if sent == 0:
                        raise
                    break
                # sendmmsg reports each message's length in its msg_len, which callers check.
                assert host.mem is not None
                os.pwrite(host.mem, struct.pack("<I", size), vector + index * MMSGHDR_SIZE + MSGHDR.size)
                sent += 1
            return sent
        finally:
            os.close(dup)

    def _message(self, host: _Host, address: int) -> tuple[bytes, bytes]:
        """The destination and the bytes of one struct msghdr; control data is not carried."""
        name, name_length, iov, iov_count, _control, control_length, _flags = MSGHDR.unpack(
            self._read(host, address, MSGHDR.size)
        )
        if control_length:
            raise Refused(errno.EACCES, "control messages on a guarded socket")
        if iov_count > MAX_IOV:
            raise Refused(errno.EMSGSIZE)
        raw = self._read(host, name, min(name_length, MAX_SOCKADDR)) if name and name_length else b""
        parts, total = [], 0
        vectors = self._read(host, iov, iov_count * IOVEC.size)
        for index in range(iov_count):
            base, length = IOVEC.unpack_from(vectors, index * IOVEC.size)
            if total + length > MAX_SEND:
                raise Refused(errno.EMSGSIZE)
            parts.append(self._read(host, base, length))
            total += length
        return raw, b"".join(parts)

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

    def _send(self, dup: int, data: bytes, flags: int, raw: bytes) -> int:
        flags |= socket.MSG_DONTWAIT  # the guard never waits on a host's send
        sent = _libc.sendto(dup, data, len(data), flags, raw or None, len(raw))
        if sent < 0:
            raise Refused(ctypes.get_errno())
        return int(sent)

    def _judge(self, raw: bytes) -> None:
        destination = sockaddr(raw)
        if destination is None:
            return  # AF_UNSPEC: dissolves a datagram socket's association
        address, port = destination
        verdict: Verdict = self.policy.decide(address, port)
        if not verdict.allowed:
            raise Refused(errno.EACCES, f"{_show(address, port)}: {verdict.reason}")


def _socket_error(fd: int) -> int:
    """How a non-blocking connect ended (0: connected)."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        sock.detach()  # the descriptor stays the caller's to close


def _exited(pidfd: int) -> bool:
    """A pidfd is readable once its process has ended."""
    return bool(select.select([pidfd], [], [], 0)[0])


def sockaddr(raw: bytes) -> tuple[Address, int] | None:
    """(address, port) of a sockaddr_in or sockaddr_in6, None for AF_UNSPEC; Refused for anything else."""
    if len(raw) < 2:
        raise Refused(errno.EINVAL)
    (family,) = struct.unpack_from("=H", raw)
    if family == socket.AF_UNSPEC:
        return None
    if family == socket.AF_INET and len(raw) >= 16:
        return ipaddress.IPv4Address(raw[4:8]), struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET6 and len(raw) >= 24:
        return ipaddress.IPv6Address(raw[8:24]), struct.unpack_from("!H", raw, 2)[0]
    if family in INET:
        raise Refused(errno.EINVAL)
    raise Refused(errno.EAFNOSUPPORT)


def _show(address: Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _family_name(family: int) -> str:
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return f"family {family}"

"""The raw layer under the egress guard: seccomp user notifications, pidfd_getfd, and a host's memory.

The kernel's structures (struct seccomp_notif, msghdr, sockaddr) and ioctls, the libc calls the guard
makes on a host's behalf, and reads of what a waiting call points at through /proc/<pid>/mem. What to
allow is decided above this layer (egress_guard.py); here a call is only read, made or answered.
"""

import ctypes
import errno
import fcntl
import ipaddress
import os
import select
import socket
import struct

from attrs import define

from adapters.hosts.egress_policy import Address

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
INET = (socket.AF_INET, socket.AF_INET6)

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


@define
class GuardedHost:
    """A host whose calls the guard answers: its process, and the listener of its seccomp filter."""

    pid: int
    pidfd: int
    listener: int
    mem: int | None = None  # /proc/<pid>/mem, opened at the first call (after the exec)
    refused: int = 0


@define(frozen=True)
class Notification:
    """One call a host waits in: its id (for the answer), the syscall's name (None: not guarded), and
    its six arguments."""

    id: int
    name: str | None
    args: tuple[int, ...]


def pidfd_getfd(pidfd: int, target: int) -> int:
    """A duplicate of descriptor `target` of the process behind `pidfd`."""
    fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(fd)


# -- notifications ----------------------------------------------------------------------------------


def receive(host: GuardedHost) -> Notification:
    """The next call of `host`'s filter; OSError when there is none (interrupted, or the host has gone)."""
    buffer = bytearray(NOTIF.size)
    fcntl.ioctl(host.listener, IOCTL_RECV, buffer, True)
    notification, _tid, _flags, number, arch, _ip, *args = NOTIF.unpack(buffer)
    return Notification(notification, SYSCALLS.get(arch, {}).get(number), tuple(args))


def answer(host: GuardedHost, notification: int, value: int, code: int) -> None:
    """End the host's call with `value`, or with the errno `code` when it is not 0."""
    try:
        fcntl.ioctl(host.listener, IOCTL_SEND, RESPONSE.pack(notification, value, -code, 0))
    except OSError:
        pass  # the call was interrupted meanwhile: nobody waits for this answer


def waiting(host: GuardedHost, notification: int) -> bool:
    """Whether the caller still waits in the call `notification`."""
    try:
        fcntl.ioctl(host.listener, IOCTL_ID_VALID, struct.pack("<Q", notification))
    except OSError:
        return False
    return True


def checked(host: GuardedHost, notification: int) -> None:
    """What was read belongs to this very call: the caller still waits in it."""
    if not waiting(host, notification):
        raise Refused(errno.EINTR)


def exited(pidfd: int) -> bool:
    """A pidfd is readable once its process has ended."""
    return bool(select.select([pidfd], [], [], 0)[0])


# -- the host's memory and descriptors --------------------------------------------------------------


def read(host: GuardedHost, address: int, size: int) -> bytes:
    """`size` bytes at `address` in the host; Refused (EFAULT) when they are not all there."""
    if host.mem is None:
        host.mem = os.open(f"/proc/{host.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
    data = os.pread(host.mem, size, address) if size else b""
    if len(data) != size:
        raise Refused(errno.EFAULT)
    return data


def write(host: GuardedHost, address: int, data: bytes) -> None:
    """Write `data` at `address` in the host, whose memory an earlier read opened."""
    assert host.mem is not None
    os.pwrite(host.mem, data, address)


def read_message(host: GuardedHost, address: int) -> tuple[bytes, bytes]:
    """The destination and the bytes of one struct msghdr; control data is not carried."""
    name, name_length, iov, iov_count, _control, control_length, _flags = MSGHDR.unpack(
        read(host, address, MSGHDR.size)
    )
    if control_length:
        raise Refused(errno.EACCES, "control messages on a guarded socket")
    if iov_count > MAX_IOV:
        raise Refused(errno.EMSGSIZE)
    raw = read(host, name, min(name_length, MAX_SOCKADDR)) if name and name_length else b""
    parts, total = [], 0
    vectors = read(host, iov, iov_count * IOVEC.size)
    for index in range(iov_count):
        base, length = IOVEC.unpack_from(vectors, index * IOVEC.size)
        if total + length > MAX_SEND:
            raise Refused(errno.EMSGSIZE)
        parts.append(read(host, base, length))
        total += length
    return raw, b"".join(parts)


def socket_of(host: GuardedHost, fd: int) -> tuple[int, int, int]:
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


# -- the calls the guard makes on a host's behalf -----------------------------------------------------


def connect(fd: int, raw: bytes) -> int:
    """connect(2) to the sockaddr `raw`: 0, or the errno it failed with."""
    return 0 if _libc.connect(fd, raw, len(raw)) == 0 else ctypes.get_errno()


def send(fd: int, data: bytes, flags: int, raw: bytes) -> int:
    """sendto(2) of `data` to `raw` (b"": the socket's peer), never waiting; Refused with its errno."""
    flags |= socket.MSG_DONTWAIT  # the guard never waits on a host's send
    sent = _libc.sendto(fd, data, len(data), flags, raw or None, len(raw))
    if sent < 0:
        raise Refused(ctypes.get_errno())
    return int(sent)


def socket_error(fd: int) -> int:
    """How a non-blocking connect ended (0: connected)."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        sock.detach()  # the descriptor stays the caller's to close


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

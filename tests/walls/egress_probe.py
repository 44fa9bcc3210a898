"""Attacks the egress wall from inside a host's place, with raw system calls, and prints one JSON object.

argv: allowed port, refused port (both TCP and UDP listeners on 127.0.0.1), a Unix socket path.
Run by the launcher with FUNCTIONS_EGRESS_ALLOW=127.0.0.1:<allowed port>.
"""

import ctypes
import errno
import json
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)
MSG_FASTOPEN = 0x20000000
IPPROTO_SCTP = 132


def attempt(action: Callable[[], Any]) -> str:
    started = time.monotonic()
    try:
        result = action()
    except OSError as exc:
        outcome = f"refused: {errno.errorcode.get(exc.errno or 0, exc.errno)}"
    else:
        outcome = f"allowed: {result}" if result is not None else "allowed"
    took = time.monotonic() - started
    return outcome if took < 5 else f"{outcome} (after {took:.1f} s)"


def tcp(port: int, blocking: bool = True) -> Callable[[], Any]:
    def action() -> Any:
        with socket.socket() as sock:
            sock.setblocking(blocking)
            code = sock.connect_ex(("127.0.0.1", port))
            if code and code != errno.EINPROGRESS:
                raise OSError(code, "connect")
            if not blocking:  # the connection completes in the kernel: wait for it
                select.select([], [sock], [], 5)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, "connect")
            sock.sendall(b"hello")
            return None

    return action


def udp_sendto(port: int) -> Callable[[], Any]:
    def action() -> Any:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return sock.sendto(b"datagram", ("127.0.0.1", port))

    return action


def udp_connected(port: int) -> Callable[[], Any]:
    def action() -> Any:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("127.0.0.1", port))
            return sock.send(b"connected datagram")

    return action


def udp_sendmsg(port: int) -> Callable[[], Any]:
    def action() -> Any:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return sock.sendmsg([b"send", b"msg"], [], 0, ("127.0.0.1", port))

    return action


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("header", Msghdr), ("length", ctypes.c_uint)]


def sockaddr_in(port: int) -> ctypes.Array[ctypes.c_char]:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + bytes([127, 0, 0, 1]) + bytes(8)
    return ctypes.create_string_buffer(raw, len(raw))


def udp_sendmmsg(port: int) -> Callable[[], Any]:
    """Two datagrams in one sendmmsg, as glibc's resolver sends its A and AAAA queries."""

    def action() -> Any:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            address = sockaddr_in(port)
            payloads = [ctypes.create_string_buffer(b"first"), ctypes.create_string_buffer(b"second!")]
            vectors = [Iovec(ctypes.cast(p, ctypes.c_void_p), len(p.value)) for p in payloads]
            messages = (Mmsghdr * 2)()
            for index, vector in enumerate(vectors):
                header = messages[index].header
                header.name = ctypes.cast(address, ctypes.c_void_p)
                header.namelen = len(address)
                header.iov = ctypes.pointer(vector)
                header.iovlen = 1
            sent = LIBC.sendmmsg(sock.fileno(), messages, 2, 0)
            if sent < 0:
                raise OSError(ctypes.get_errno(), "sendmmsg")
            return [sent, messages[0].length, messages[1].length]

    return action


def unix(path: str) -> Callable[[], Any]:
    def action() -> Any:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)

    return action


def fast_open(port: int) -> Callable[[], Any]:
    def action() -> Any:
        with socket.socket() as sock:
            return sock.sendto(b"syn data", MSG_FASTOPEN, ("127.0.0.1", port))

    return action


def sctp() -> Any:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP).close()


def addrconfig() -> Any:
    """getaddrinfo with AI_ADDRCONFIG asks the kernel over netlink which addresses exist."""
    return sorted({info[4][0] for info in socket.getaddrinfo("127.0.0.1", 80, flags=socket.AI_ADDRCONFIG)})


def race(allowed: int, refused: int, rounds: int = 300) -> dict[str, int]:
    """One thread flips the port of a sockaddr between the allowed and the refused one while another
    connects with it: a guard that checked and then let the kernel read the address again would lose."""
    address = sockaddr_in(allowed)
    ports = [struct.pack("!H", allowed), struct.pack("!H", refused)]
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for port in ports:
                ctypes.memmove(ctypes.addressof(address) + 2, port, 2)

    flipper = threading.Thread(target=flip)
    flipper.start()
    outcomes = {"connected": 0, "refused": 0}
    try:
        for _ in range(rounds):
            with socket.socket() as sock:
                if LIBC.connect(sock.fileno(), address, len(address)) == 0:
                    outcomes["connected"] += 1
                else:
                    outcomes["refused"] += 1
    finally:
        stop.set()
        flipper.join()
    return outcomes


def main() -> None:
    allowed, refused, unix_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    report = {
        "tcp_refused": attempt(tcp(refused)),
        "tcp_refused_nonblocking": attempt(tcp(refused, blocking=False)),
        "tcp_allowed": attempt(tcp(allowed)),
        "tcp_allowed_nonblocking": attempt(tcp(allowed, blocking=False)),
        "udp_sendto_refused": attempt(udp_sendto(refused)),
        "udp_sendto_allowed": attempt(udp_sendto(allowed)),
        "udp_connect_refused": attempt(udp_connected(refused)),
        "udp_connect_allowed": attempt(udp_connected(allowed)),
        "udp_sendmsg_refused": attempt(udp_sendmsg(refused)),
        "udp_sendmsg_allowed": attempt(udp_sendmsg(allowed)),
        "udp_sendmmsg_refused": attempt(udp_sendmmsg(refused)),
        "udp_sendmmsg_allowed": attempt(udp_sendmmsg(allowed)),
        "unix": attempt(unix(unix_path)),
        "fast_open": attempt(fast_open(allowed)),
        "sctp": attempt(sctp),
        "addrconfig": attempt(addrconfig),
        "race": race(allowed, refused),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

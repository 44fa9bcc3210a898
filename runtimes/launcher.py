"""Raises the operating-system walls around a runtime host, then becomes that host.

Started by the service's own Python as `python -I launcher.py '<json plan>' host-argv...`; see
adapters/hosts/walls.py for the plan. In order: resource limits, the unprivileged user, no_new_privs,
Landlock, the seccomp filter, then execv. Any wall that the plan asks for and that cannot be raised
stops the launch (exit 126): a host never starts with fewer walls than the service reports.

The egress wall: the filter also turns connect and addressed sends into user notifications. Its
listener is handed to the service's guard (adapters/hosts/egress_guard.py) over an inherited channel
before the exec, and closed here: the host never holds the descriptor that answers for it.
"""

import ctypes
import errno
import json
import os
import resource
import sys
from typing import Any

# Imported before the user switch: the unprivileged user may not reach the service's Python.
try:
    import landlock
except ImportError:
    landlock = None
try:
    import pyseccomp as seccomp
except (ImportError, RuntimeError):  # RuntimeError: no libseccomp on this machine
    seccomp = None

FAILED = 126
CLONE_THREAD = 0x00010000
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
AF_PACKET, SOCK_RAW, SOCK_TYPE_MASK = 17, 3, 0xF
IPPROTO_SCTP = 132  # SCTP connects through setsockopt (SCTP_SOCKOPT_CONNECTX), which no notification sees
GUARDED_CALLS = ("connect", "sendmsg", "sendmmsg")  # and sendto with an address: decided by the guard
LIMITS = {
    "address_space": resource.RLIMIT_AS,
    "open_files": resource.RLIMIT_NOFILE,
    "file_size": resource.RLIMIT_FSIZE,
    "core": resource.RLIMIT_CORE,
}
# Calls no host makes: they reach other processes, the kernel or the machine. Names libseccomp does not
# know on this machine are skipped (the kernel cannot offer what its libseccomp cannot name either).
REFUSED_CALLS = (
    "fork vfork execve ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd pidfd_send_signal tkill "
    "mount umount2 pivot_root chroot mount_setattr move_mount open_tree fsopen fsconfig fsmount fspick "
    "setns unshare swapon swapoff reboot kexec_load kexec_file_load init_module finit_module delete_module "
    "bpf perf_event_open userfaultfd keyctl add_key request_key acct syslog vhangup uselib quotactl "
    "quotactl_fd lookup_dcookie fanotify_init open_by_handle_at name_to_handle_at iopl ioperm "
    "settimeofday clock_settime clock_adjtime adjtimex sethostname setdomainname "
    "setuid setgid setreuid setregid setresuid setresgid setgroups setfsuid setfsgid capset "
    "chmod fchmod fchmodat chown fchown lchown fchownat setxattr lsetxattr fsetxattr "
    "removexattr lremovexattr fremovexattr utime utimes utimensat futimesat"
).split()
ABSENT_CALLS = (
    "clone3",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)  # ENOSYS: callers fall back
SIGNAL_CALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # first argument: the target


def fail(why: str) -> None:
    sys.stderr.write(f"launcher: {why}\n")
    sys.stderr.flush()
    os._exit(FAILED)


def limit_resources(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        resource.setrlimit(LIMITS[name], (value, value))


def become_user(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        fail(f"still uid {os.geteuid()} after switching to {uid}")


def own_user_namespace() -> None:
    """Stay root only inside a user namespace of its own: no capability over the machine's processes,
    limits, network or kernel. For a root service whose host cannot run as the unprivileged user."""
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:  # os.unshare arrives in Python 3.12
        fail(f"unshare(CLONE_NEWUSER): {os.strerror(ctypes.get_errno())}")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(text)


def no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"no_new_privs: {os.strerror(ctypes.get_errno())}")


def restrict_files(read: list[str], execute: list[str], write: list[str]) -> None:
    """Landlock: every filesystem right the kernel knows is handled; only reading the `read` paths,
    executing the `execute` files and keeping files in the `write` folders is granted."""
    if landlock is None:
        raise RuntimeError("the landlock package is not installed")
    FSAccess = landlock.FSAccess
    ruleset = landlock.Ruleset()  # handles every access right of this kernel's ABI
    file_read = FSAccess.READ_FILE
    for path in read:
        rights = file_read | FSAccess.READ_DIR if os.path.isdir(path) else file_read
        ruleset.allow(path, rules=rights)
    for path in execute:
        ruleset.allow(path, rules=file_read | FSAccess.EXECUTE)
    keep = (
        FSAccess.WRITE_FILE
        | FSAccess.MAKE_REG
        | FSAccess.MAKE_DIR
        | FSAccess.REMOVE_FILE
        | FSAccess.REMOVE_DIR
    )
    if landlock.landlock_abi_version() >= 3:
        keep |= FSAccess.TRUNCATE
    for path in write:  # no links, devices, sockets or pipes, and nothing to execute
        ruleset.allow(path, rules=file_read | FSAccess.READ_DIR | keep)
    ruleset.apply()


def filter_calls(egress: bool) -> int | None:
    """seccomp: threads yes, new processes no; and none of the calls in REFUSED_CALLS. With `egress`,
    connects and addressed sends wait for the guard's answer; the filter's listener is returned."""
    if seccomp is None:
        raise RuntimeError("pyseccomp or libseccomp is missing")
    refuse = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)  # 32-bit and x32 calls bypass the rules
    for name in REFUSED_CALLS:
        add_rule(rules, refuse, name)
    for name in ABSENT_CALLS:
        add_rule(rules, seccomp.ERRNO(errno.ENOSYS), name)
    # clone for a thread passes; clone for a process (no CLONE_THREAD) does not.
    add_rule(rules, refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    # Signals only to this very process (its pid survives the exec): not to other hosts of the same user.
    for name in SIGNAL_CALLS:
        add_rule(rules, refuse, name, seccomp.Arg(0, seccomp.NE, os.getpid()))
    # Raw and packet sockets read or forge any traffic of the machine.
    add_rule(rules, refuse, "socket", seccomp.Arg(0, seccomp.EQ, AF_PACKET))
    add_rule(rules, refuse, "socket", seccomp.Arg(1, seccomp.MASKED_EQ, SOCK_TYPE_MASK, SOCK_RAW))
    if not egress:
        rules.load()
        return None
    add_rule(rules, seccomp.ERRNO(errno.EPROTONOSUPPORT), "socket", seccomp.Arg(2, seccomp.EQ, IPPROTO_SCTP))
    for name in GUARDED_CALLS:
        add_rule(rules, seccomp.NOTIFY, name)
    # sendto with no address (a connected socket's send) passes: its peer was judged at connect.
    add_rule(rules, seccomp.NOTIFY, "sendto", seccomp.Arg(4, seccomp.NE, 0))
    rules.load()
    listener = int(seccomp._libseccomp.seccomp_notify_fd(rules._filter))  # no public accessor in pyseccomp
    if listener < 0:
        raise RuntimeError("the seccomp filter has no listener")
    return listener


def hand_over(listener: int, channel: int) -> None:
    """Give the guard the listener (it copies it with pidfd_getfd), wait for its word, then let go of it."""
    os.write(channel, f"{listener}\n".encode())
    answer = os.read(channel, 16)
    os.close(listener)
    os.close(channel)
    if not answer.startswith(b"go"):
        raise RuntimeError("the service's egress guard did not take the listener")


def add_rule(rules: Any, action: int, name: str, *args: Any) -> None:
    try:
        number = seccomp.resolve_syscall(seccomp.system_arch(), name)
    except Exception:  # unknown to this libseccomp
        return
    if number < 0:
        return
    rules.add_rule(action, name, *args)


def main() -> None:
    plan = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    if not argv:
        fail("no host to start")
    try:
        binary = os.open(argv[0], os.O_PATH | os.O_CLOEXEC)
        os.chdir("/")
        if plan.get("scratch"):
            os.environ["TMPDIR"] = plan["scratch"]  # tempfile's folder: the only writable one
        limit_resources(plan.get("limits", {}))
        if plan.get("user") is not None:
            become_user(*plan["user"])
        elif plan.get("user_namespace"):
            own_user_namespace()
        if plan.get("no_new_privs"):
            no_new_privs()
        if plan.get("landlock") is not None:
            rules = plan["landlock"]
            restrict_files(rules["read"], rules["execute"], rules.get("write", []))
        egress = plan.get("egress")
        if plan.get("seccomp"):
            listener = filter_calls(egress is not None)
            if egress is not None and listener is not None:
                hand_over(listener, egress["channel"])
        elif egress is not None:
            raise RuntimeError("the egress wall needs the seccomp wall")
    except Exception as exc:  # a wall that was planned and cannot be raised: no host
        fail(f"{type(exc).__name__}: {exc}")
    try:
        # By descriptor (execveat): the filter refuses execve itself, and Landlock lets only the host's own
        # binary be executed, so the host can start nothing else either.
        os.execve(binary, argv, os.environ)
    except OSError as exc:
        fail(f"cannot start {argv[0]}: {exc}")


if __name__ == "__main__":
    main()

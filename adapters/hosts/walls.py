"""The operating-system walls around the runtime hosts: which ones this machine offers, and the launch.

Every host is started through runtimes/launcher.py, which raises the walls planned here and then executes
the host. The plan is made in the service, where settings and paths are known; the launcher only applies
it. FUNCTIONS_WALLS=strict refuses to start a host with a wall missing; `standard` starts it and the
health report says which walls are off and why.
"""

import json
import logging
import os
import pwd
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from attrs import define, field, frozen

from adapters.hosts import egress_guard
from adapters.hosts.egress_facts import machine_policy
from adapters.hosts.egress_guard import EgressGuard
from adapters.hosts.egress_policy import ALL, EgressPolicy
from domain.model import Json

LAUNCHER = Path(__file__).resolve().parents[2] / "runtimes" / "launcher.py"
STRICT, STANDARD = "strict", "standard"
UNPRIVILEGED = "nobody"
# What any host reads to start and to reach the network (libraries, TLS, time zones, name resolution),
# and the parts of /proc and /sys the runtimes ask for their limits. Missing ones are left out.
SYSTEM_READ = (
    "/usr/lib /usr/lib64 /lib /lib64 /etc/ld.so.cache /etc/ssl /usr/lib/ssl /etc/localtime "
    "/usr/share/zoneinfo /etc/mime.types /etc/resolv.conf /etc/hosts /etc/nsswitch.conf /etc/host.conf "
    "/etc/gai.conf /etc/services /etc/protocols /dev/null /dev/urandom /dev/random "
    "/proc/self /proc/meminfo /proc/cpuinfo /proc/stat "
    "/sys/devices/system/cpu /sys/fs/cgroup"
).split()
SCRATCH_PREFIX = "functions-host-"  # then the service's pid: folders of a service that died are swept
ELF_INTERPRETER = "/lib64/ld-linux-x86-64.so.2"  # executing a binary executes its loader too
log = logging.getLogger("functions.walls")


class WallMissing(RuntimeError):
    """FUNCTIONS_WALLS=strict and a wall this host needs is not there."""


@frozen
class Wall:
    """One wall: up or not, and what it is or why it is off."""

    on: bool
    detail: str
    chosen: bool = False  # off by the operator's own setting (FUNCTIONS_EGRESS=all): not missing

    def as_json(self) -> dict[str, Json]:
        return {"on": self.on, ("detail" if self.on else "reason"): self.detail}


@frozen
class HostPlan:
    """What one host needs: the binary it runs, what it reads, and its resource limits."""

    name: str  # the runtime it serves: nodejs, python
    binary: str
    read: Sequence[str]
    address_space_mb: int | None = None
    open_files: int = 1024
    scratch: bool = False  # a private writable folder of its own, as TMPDIR (removed when the host ends)
    scratch_file_mb: int = 64  # the largest file it may write there


@define
class Launch:
    """How to start one host behind its walls, and the scratch folder to remove once it has ended.

    With the egress wall, the launcher inherits one end of a channel (`pass_fds`) and waits on it until the
    guard has taken its seccomp listener: `started(pid)` hands the other end to the guard.
    """

    argv: list[str]
    scratch: str | None = None
    guard: EgressGuard | None = None
    channel: tuple[socket.socket, socket.socket] | None = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.channel[1].fileno(),) if self.channel else ()

    def started(self, pid: int) -> None:
        if self.channel is not None and self.guard is not None:
            ours, theirs = self.channel
            self.channel = None
            theirs.close()
            self.guard.adopt(pid, ours)

    def cleanup(self) -> None:
        if self.channel is not None:  # never started
            for end in self.channel:
                end.close()
            self.channel = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def probe() -> dict[str, Wall]:
    """What this machine and this process offer, asked once."""
    offered = {"environment": Wall(True, "only the variables the host needs")}
    offered["landlock"] = _probe_landlock()
    offered["seccomp"] = _probe_seccomp()
    linux = sys.platform == "linux"
    offered["no_new_privs"] = Wall(linux, "set" if linux else "needs Linux")
    offered["limits"] = Wall(True, "open files, file size, no core dumps")
    if os.geteuid() != 0:
        offered["user"] = Wall(True, f"the service's own user (uid {os.geteuid()}), not root")
    else:
        try:
            entry = pwd.getpwnam(UNPRIVILEGED)
            offered["user"] = Wall(True, f"{UNPRIVILEGED} (uid {entry.pw_uid})")
        except KeyError:
            offered["user"] = Wall(False, f"the service runs as root and there is no user {UNPRIVILEGED!r}")
    offered["capabilities"] = _probe_user_namespaces()
    return offered


def _egress_wall(policy: EgressPolicy, offered: Mapping[str, Wall]) -> Wall:
    """The egress wall: the seccomp filter sends connects and sends to the guard, which this kernel must
    support (seccomp user notification, pidfd_getfd)."""
    if policy.mode == ALL:
        return Wall(False, "FUNCTIONS_EGRESS=all: functions may connect anywhere, by choice", chosen=True)
    seccomp = offered.get("seccomp")
    if seccomp is None or not seccomp.on:
        return Wall(False, f"needs the seccomp wall ({seccomp.detail if seccomp else 'not offered'})")
    why = egress_guard.probe()
    if why is not None:
        return Wall(False, why)
    return Wall(
        True, f"every connect and send judged by the service (seccomp user notification); {policy.describe()}"
    )


def _effective_capabilities() -> int:
    """This process's effective capability set (CapEff in /proc/self/status); -1 if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return -1


def _probe_user_namespaces() -> Wall:
    try:
        allowed = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        allowed = 0
    if allowed < 1:
        return Wall(False, "the kernel offers no user namespaces: a root host keeps root's capabilities")
    return Wall(True, "root only inside a user namespace of its own: no capability over the machine")


def _probe_landlock() -> Wall:
    try:
        import landlock

        abi = int(landlock.landlock_abi_version())
    except ImportError:
        return Wall(False, "the landlock package is not installed")
    except OSError as exc:
        return Wall(False, f"the kernel does not offer Landlock: {getattr(exc, 'reason', None) or exc}")
    return Wall(True, f"Landlock ABI {abi}")


def _probe_seccomp() -> Wall:
    try:
        import pyseccomp

        api = pyseccomp.get_api()
    except ImportError:
        return Wall(False, "the pyseccomp package is not installed")
    except (RuntimeError, OSError, AttributeError) as exc:  # no libseccomp.so.2 on this machine
        return Wall(False, f"libseccomp is not usable: {exc}")
    if api < 1:
        return Wall(False, "the kernel does not offer seccomp filters")
    return Wall(True, f"libseccomp API level {api}")


@define
class Walls:
    """The walls of every host this service starts, built once from FUNCTIONS_WALLS."""

    mode: str = STANDARD
    offered: Mapping[str, Wall] = field(factory=probe)
    launcher_python: str = sys.executable
    egress: EgressPolicy = field(factory=machine_policy)  # FUNCTIONS_EGRESS, FUNCTIONS_EGRESS_ALLOW
    _hosts: dict[str, dict[str, Wall]] = field(factory=dict, init=False)
    _guard: EgressGuard | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if self.mode not in (STRICT, STANDARD):
            raise ValueError(f"the walls' mode must be {STRICT} or {STANDARD}, not {self.mode!r}")
        if "egress" not in self.offered:
            self.offered = {**self.offered, "egress": _egress_wall(self.egress, self.offered)}
        sweep_scratch_folders()

    @property
    def guard(self) -> EgressGuard:
        """The one guard of this process's hosts, made at the first host that needs it."""
        if self._guard is None:
            self._guard = EgressGuard(self.egress)
        return self._guard

    def launch(self, plan: HostPlan, argv: Sequence[str], extra: Mapping[str, Wall] | None = None) -> Launch:
        """How to start `argv` behind the walls; WallMissing in strict mode if one is off.

        `extra` adds walls of the host's own (the Node permission model) to the report and the check.
        """
        walls = dict(self.offered)
        user, namespace = None, False
        if walls["user"].on and os.geteuid() == 0:
            user = self._user_for(plan)
            if user is None:
                walls["user"] = Wall(False, self._unreachable(plan))
        if user is not None:
            walls["capabilities"] = Wall(True, f"runs as {UNPRIVILEGED}: none beyond an ordinary user's")
        elif os.geteuid() == 0:
            namespace = walls["capabilities"].on
        else:  # not root: the host inherits what this process holds, whatever user namespaces offer
            held = _effective_capabilities()
            walls["capabilities"] = (
                Wall(True, "not root: none beyond an ordinary user's")
                if held == 0
                else Wall(
                    False, f"not root, but the service holds capabilities {held:#x}, which its hosts inherit"
                )
            )
        walls.update(extra or {})
        previous, self._hosts[plan.name] = self._hosts.get(plan.name), walls
        off = {name: wall.detail for name, wall in walls.items() if not wall.on and not wall.chosen}
        if off:
            summary = "; ".join(f"{name}: {why}" for name, why in off.items())
            if self.mode == STRICT:
                raise WallMissing(f"FUNCTIONS_WALLS=strict: the {plan.name} host lacks walls ({summary})")
            if walls != previous:  # said once, not at every kernel or dedicated host that starts
                log.warning("the %s host starts without some walls (%s)", plan.name, summary)
        scratch = _scratch_folder(user) if plan.scratch else None
        file_size = plan.scratch_file_mb * 1024 * 1024 if scratch else 0  # no file to write: none may grow
        limits: dict[str, int] = {"open_files": plan.open_files, "file_size": file_size, "core": 0}
        if plan.address_space_mb is not None:
            limits["address_space"] = plan.address_space_mb * 1024 * 1024
        launch: dict[str, Json] = {
            "limits": dict(limits),
            "user": list(user) if user else None,
            "user_namespace": namespace,
            "no_new_privs": walls["no_new_privs"].on,
            "landlock": self._landlock(plan, scratch) if walls["landlock"].on else None,
            "seccomp": walls["seccomp"].on,
            "scratch": scratch,
        }
        channel = None
        if walls["egress"].on and walls["seccomp"].on:
            channel = self.guard.channel()
            launch["egress"] = {"channel": channel[1].fileno()}
        argv = [self.launcher_python, "-I", str(LAUNCHER), _json(launch), *argv]
        return Launch(argv, scratch, self.guard if channel else None, channel)

    def egress_enforced(self) -> str | None:
        """FUNCTIONS_EGRESS where the guard enforces it (hosts explain its refusals), else None."""
        return self.egress.mode if self.offered["egress"].on and self.offered["seccomp"].on else None

    def report(self) -> dict[str, Json]:
        """For /sys/healthcheck: the walls' mode and, per host, each wall on or off with the reason."""
        hosts: dict[str, Json] = {
            name: {wall: state.as_json() for wall, state in walls.items()}
            for name, walls in self._hosts.items()
        }
        return {"mode": self.mode, "hosts": hosts}

    # -- the plan ---------------------------------------------------------------------------------

    def _landlock(self, plan: HostPlan, scratch: str | None) -> dict[str, Json]:
        read = _existing([*SYSTEM_READ, *plan.read])
        execute = _existing([os.path.realpath(plan.binary), os.path.realpath(ELF_INTERPRETER)])
        return {"read": list(read), "execute": list(execute), "write": [scratch] if scratch else []}

    def _user_for(self, plan: HostPlan) -> tuple[int, int] | None:
        """The unprivileged user, if it can reach all the host needs."""
        entry = pwd.getpwnam(UNPRIVILEGED)
        return None if _blocked(plan) else (entry.pw_uid, entry.pw_gid)

    def _unreachable(self, plan: HostPlan) -> str:
        first = next(iter(_blocked(plan)), plan.binary)
        return f"runs as root: {first} is out of reach of {UNPRIVILEGED}"


def _blocked(plan: HostPlan) -> list[str]:
    """What the host needs that the unprivileged user cannot reach."""
    entry = pwd.getpwnam(UNPRIVILEGED)
    needed = _existing([plan.binary, *plan.read])
    return [path for path in needed if not reachable(path, entry.pw_uid, entry.pw_gid)]


def _scratch_folder(user: tuple[int, int] | None) -> str:
    folder = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")  # mode 700: the host's own
    if user is not None:
        os.chown(folder, *user)
    return folder


def sweep_scratch_folders() -> None:
    """Remove the scratch folders of services that are gone (killed before they could remove them)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        owner = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def reachable(path: str, uid: int, gid: int) -> bool:
    """Whether `uid`/`gid` may reach and read `path` (by the mode bits of it and of every folder above)."""
    real = Path(os.path.realpath(path))
    for folder in reversed(real.parents):
        if not _allows(folder, uid, gid, stat.S_IXOTH):
            return False
    wanted = stat.S_IROTH | (stat.S_IXOTH if real.is_dir() else 0)
    return _allows(real, uid, gid, wanted)


def _allows(path: Path, uid: int, gid: int, other_bits: int) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    if info.st_uid == uid:
        shift = 6
    elif info.st_gid == gid:
        shift = 3
    else:
        shift = 0
    bits = (info.st_mode >> shift) & 0o7
    return bits & other_bits == other_bits


def _existing(paths: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for path in paths:
        real = os.path.realpath(path) if not path.startswith("/proc/self") else path
        if os.path.exists(real):
            seen.setdefault(real)
    return list(seen)


def _json(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"))

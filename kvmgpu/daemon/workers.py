"""Worker processes: starting one for a running VM, adopting one an earlier daemon started,
reaping and stopping them, and reading their live counters.

A worker runs in its own session (it outlives the daemon: a daemon restart must not cut a VM off
its GPU) as QEMU's user, so it can open what QEMU created (the channel socket, the shared region)
and nothing of root's. Its pid goes in `<run_dir>/workers/<vm>.pid`; a pid is only believed when
/proc/<pid>/cmdline says it is a kvmgpu worker for that VM.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_QEMU_USER = "libvirt-qemu"     # Debian's build of libvirt
DEFAULT_QEMU_GROUP = "libvirt-qemu"


# --- whom workers run as ------------------------------------------------------------------------

@dataclass(frozen=True)
class RunAs:
    """The identity a worker runs under."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def qemu_identity(conf: Path = QEMU_CONF, default_group: str | None = None) -> tuple[str, str]:
    """QEMU's (user, group) as libvirt's qemu driver runs it: `user =` and `group =` in qemu.conf,
    else Debian's defaults (the group: `default_group` when given)."""
    user, group = DEFAULT_QEMU_USER, default_group or DEFAULT_QEMU_GROUP
    try:
        text = conf.read_text()
    except OSError:
        return user, group
    for line in text.splitlines():
        m = re.match(r'^\s*(user|group)\s*=\s*"([^"]*)"', line)
        if m and m.group(2):
            if m.group(1) == "user":
                user = m.group(2)
            else:
                group = m.group(2)
    return user, group


def _uid_of(name: str) -> tuple[str, int, int]:
    """(name, uid, primary gid) of a user named `name`, `+N` (libvirt's numeric form) or `N`."""
    spec = name.lstrip("+")
    entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def _gid_of(name: str) -> int:
    spec = name.lstrip("+")
    return int(spec) if spec.isdigit() else grp.getgrnam(spec).gr_gid


def resolve_run_as(user: str, group: str | None = None) -> RunAs:
    """The identity for `user` (and `group`, else the user's primary group) with its groups."""
    name, uid, primary = _uid_of(user)
    gid = _gid_of(group) if group else primary
    groups = tuple(sorted(set(os.getgrouplist(name, gid))))
    return RunAs(name, uid, gid, groups)


def may_read(path: Path | str, who: RunAs) -> bool:
    """Whether `who` can reach and read `path` by its mode bits: search on every directory on the
    way, read on the file (read and search on a directory). Checked on the path as written and on
    the symlink-resolved path."""
    if who.is_root:
        return True
    for p in {Path(os.path.abspath(path)), Path(os.path.realpath(path))}:
        try:
            for parent in reversed(p.parents):
                if not _allowed(os.stat(parent), who, 0o1):
                    return False
            st = os.stat(p)
        except OSError:
            return False
        if not _allowed(st, who, 0o5 if stat.S_ISDIR(st.st_mode) else 0o4):
            return False
    return True


def _allowed(st: os.stat_result, who: RunAs, bits: int) -> bool:
    if st.st_uid == who.uid:
        mode = (st.st_mode >> 6) & 0o7
    elif st.st_gid == who.gid or st.st_gid in who.groups:
        mode = (st.st_mode >> 3) & 0o7
    else:
        mode = st.st_mode & 0o7
    return mode & bits == bits


def code_paths() -> list[Path]:
    """What a worker process must be able to read: the interpreter, the venv, kvmgpu and the wire
    format's package (kvmgpu_wire)."""
    import kvmgpu
    import kvmgpu_wire

    paths = [Path(sys.executable), Path(sys.prefix) / "pyvenv.cfg"] if sys.prefix != sys.base_prefix \
        else [Path(sys.executable)]
    for module in (kvmgpu, kvmgpu_wire):
        package = Path(module.__path__[0])
        paths += [package, package / "__init__.py"]
    script = worker_program()[-1]
    if script.startswith("/"):
        paths.append(Path(script))
    return paths


def choose_run_as(user: str | None, channel_group: str | None = None) -> RunAs | None:
    """Whom to run workers as: `user` ('root' means do not switch), else QEMU's user and group
    from qemu.conf; `channel_group` (the channel directory's, kvmgpu.domain.host.channel_group)
    is added to its groups, so it can reach the channel socket. None (run as the daemon's own
    user) when the daemon is not root, or, with a warning, when that user cannot read kvmgpu's
    code."""
    if os.geteuid() != 0:
        log.info("the daemon is not root: workers run as uid %d", os.geteuid())
        return None
    group: str | None = None
    if user is None:
        user, group = qemu_identity()
    if user == "root":
        log.warning("workers run as root (configured so); they should run as QEMU's user")
        return None
    try:
        who = resolve_run_as(user, group)
    except (KeyError, ValueError) as e:
        log.warning("worker user %r does not exist (%s): workers run as root", user, e)
        return None
    if channel_group:
        try:
            who = dataclasses.replace(who, groups=tuple(sorted({*who.groups, _gid_of(channel_group)})))
        except KeyError:
            log.warning("the channel directory's group %r does not exist", channel_group)
    unreadable = [str(p) for p in code_paths() if not may_read(p, who)]
    if unreadable:
        log.warning("workers run as root, not as %s: %s cannot read %s (install kvmgpu where that user "
                    "can read it, e.g. /opt or /usr/local)", who.user, who.user, ", ".join(unreadable))
        return None
    log.info("workers run as %s (uid %d, gid %d)", who.user, who.uid, who.gid)
    return who


# --- the worker command line and telling a worker's pid from any other --------------------------

def worker_program() -> list[str]:
    """How to run `kvmgpu` with this daemon's interpreter."""
    script = shutil.which("kvmgpu", path=os.path.dirname(sys.executable)) or shutil.which("kvmgpu")
    if script:
        return [sys.executable, script]
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'kvmgpu'; from kvmgpu.cli import main; main()"]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker's command line says."""

    vm: str
    backend: str            # cuda | sim
    gmem: int
    gpu: int
    compute: int
    compute_mode: str
    socket: Path            # the VM's channel (QEMU listens, the worker connects)
    shm: Path               # the VM's shared region
    stats_file: Path
    region_size: int = 64 << 20

    def argv(self) -> list[str]:
        return worker_program() + [
            "worker", "--backend", self.backend, "--gmem", str(self.gmem), "--socket", str(self.socket),
            "--shm", str(self.shm), "--region-size", str(self.region_size), "--vm", self.vm, "--gpu", str(self.gpu),
            "--compute", str(self.compute),
            "--compute-mode", self.compute_mode, "--stats-file", str(self.stats_file), "--connect"]


def channel_ready(spec: WorkerSpec) -> str | None:
    """Why a worker may not start yet (None: it may): QEMU must have bound the channel socket and
    created the region, or the worker would listen on the path itself (its loopback mode)."""
    try:
        if not stat.S_ISSOCK(os.stat(spec.socket).st_mode):
            return f"{spec.socket} is not a socket"
    except FileNotFoundError:
        return f"QEMU has not bound the channel {spec.socket}"
    if not spec.shm.exists():
        return f"QEMU has not created the region {spec.shm}"
    return None


def is_worker_argv(argv: list[str], vm: str) -> bool:
    """Whether a process's argv is `kvmgpu worker ... --vm <vm> ...`."""
    if "worker" not in argv or not any("kvmgpu" in a for a in argv):
        return False
    for i, arg in enumerate(argv):
        if arg == "--vm" and i + 1 < len(argv) and argv[i + 1] == vm:
            return True
        if arg == f"--vm={vm}":
            return True
    return False


def proc_argv(pid: int) -> list[str] | None:
    """A live process's argv from /proc (None if it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None                 # zombies and kernel threads have an empty cmdline
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def is_worker_pid(pid: int, vm: str) -> bool:
    argv = proc_argv(pid)
    return argv is not None and is_worker_argv(argv, vm)


def find_worker_pids(vm: str, proc: Path = Path("/proc")) -> list[int]:
    """Every live kvmgpu worker process for `vm` (the fallback when its pidfile is missing)."""
    pids = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and is_worker_pid(int(entry.name), vm):
            pids.append(int(entry.name))
    return sorted(pids)


# --- live counters -----------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerStats:
    memory_used: int = 0
    memory_limit: int = 0
    memory_peak: int = 0        # the worker's own high-water mark (0 from workers that lack it)
    calls: int = 0
    bytes: int = 0
    gpu_seconds: float = 0.0
    # channels the worker closed because of what a guest sent, closed on its own bug, or refused
    protocol_violations: int = 0
    internal_errors: int = 0
    channels_refused: int = 0


def _number(value: object) -> float | None:
    """A counter: a number, or the sum of a dict of numbers (per-op counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):
        parts = [_number(v) for v in value.values()]
        return sum(p for p in parts if p is not None)
    return None


def _pick(obj: dict, *paths: str) -> float:
    """The first of `paths` ('memory.used') that names a counter in obj; 0 when none does."""
    for path in paths:
        value: object = obj
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        number = _number(value)
        if number is not None:
            return number
    return 0


def read_stats(path: Path) -> WorkerStats | None:
    """The counters a worker last wrote to its stats file (None when there are none yet).

    The worker writes {"memory": {"used", "limit"}, "calls": {op: n}, "bytes": {direction: n},
    "gpu_seconds" | "compute": {"gpu_seconds"}, ...}; per-op and per-direction counts are summed."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    return WorkerStats(
        memory_used=int(_pick(obj, "memory.used", "memory_used")),
        memory_limit=int(_pick(obj, "memory.limit", "memory_limit")),
        memory_peak=int(_pick(obj, "memory.peak", "memory_peak")),
        calls=int(_pick(obj, "calls")),
        bytes=int(_pick(obj, "bytes")),
        gpu_seconds=float(_pick(obj, "gpu_seconds", "compute.gpu_seconds", "gpu_time")),
        protocol_violations=int(_pick(obj, "protocol_violations")),
        internal_errors=int(_pick(obj, "internal_errors")),
        channels_refused=int(_pick(obj, "channels_refused")),
    )


# --- one worker ----------------------------------------------------------------------------------

@dataclass
class Worker:
    """One worker process: started here (`process` set) or adopted (`process` None)."""

    spec: WorkerSpec
    pid: int
    started: float
    process: subprocess.Popen | None = None
    run_id: int | None = None
    stats: WorkerStats = field(default_factory=WorkerStats)
    peak: int = 0
    exit_status: int | None = None
    ended: bool = False
    stop_requested: float | None = None     # when the daemon asked it to go (its VM stopped)
    signalled: int = 0                       # the last signal sent while stopping

    @property
    def adopted(self) -> bool:
        return self.process is None

    @property
    def vm(self) -> str:
        return self.spec.vm

    def poll(self) -> bool:
        """Whether it still runs; when not, `ended` is set (and `exit_status` for our own children:
        the exit code, or minus the signal that ended it)."""
        if self.ended:
            return False
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return True
            self.exit_status = code
        elif is_worker_pid(self.pid, self.vm):
            return True
        self.ended = True
        return False

    def refresh_stats(self) -> bool:
        """Re-read the stats file; True when it changed."""
        stats = read_stats(self.spec.stats_file)
        if stats is None or stats == self.stats:
            return False
        self.stats = stats
        self.peak = max(self.peak, stats.memory_used, stats.memory_peak)
        return True

    def signal(self, signum: int) -> None:
        if self.poll():
            try:
                os.kill(self.pid, signum)
                self.signalled = signum
            except ProcessLookupError:
                pass


class Workers:
    """Starts and adopts workers; keeps their pidfiles, stats files and logs.

    Layout: `<run_dir>/workers/<vm>.pid` (root's), `<run_dir>/stats/<vm>.json` (a directory the
    workers' user may write), `<log_dir>/<vm>.log` (stdout and stderr of the VM's workers).
    """

    def __init__(self, run_dir: Path, log_dir: Path, run_as: RunAs | None, env: dict[str, str] | None = None):
        self.pid_dir = Path(run_dir) / "workers"
        self.stats_dir = Path(run_dir) / "stats"
        self.log_dir = Path(log_dir)
        self.run_as = run_as
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pid_dir, 0o755)
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            os.chown(self.stats_dir, run_as.uid, run_as.gid)
        os.chmod(self.stats_dir, 0o755)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def pidfile(self, vm: str) -> Path:
        return self.pid_dir / f"{vm}.pid"

    def stats_file(self, vm: str) -> Path:
        return self.stats_dir / f"{vm}.json"

    def start(self, spec: WorkerSpec) -> Worker:
        """Start a worker in its own session; its pidfile is written before this returns."""
        try:
            spec.stats_file.unlink()
        except FileNotFoundError:
            pass
        ids: dict = {}
        if self.run_as is not None:
            ids = {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": list(self.run_as.groups)}
        log_path = self.log_dir / f"{spec.vm}.log"
        with open(log_path, "ab", buffering=0) as logf:
            logf.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} kvmgpu worker for {spec.vm}\n".encode())
            process = subprocess.Popen(
                spec.argv(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd="/", env=self.env,
                start_new_session=True, close_fds=True, **ids)
        self._write_pidfile(spec.vm, process.pid)
        log.info("worker for %s started: pid %d, backend %s, GPU %d, %d bytes, log %s",
                 spec.vm, process.pid, spec.backend, spec.gpu, spec.gmem, log_path)
        return Worker(spec=spec, pid=process.pid, started=time.time(), process=process)

    def adopt(self, spec: WorkerSpec) -> Worker | None:
        """The live worker an earlier daemon started for `spec.vm`, if there is one: the pid in its
        pidfile when /proc confirms it, else one found by scanning /proc."""
        pid = self._read_pidfile(spec.vm)
        if pid is None or not is_worker_pid(pid, spec.vm):
            found = find_worker_pids(spec.vm)
            if not found:
                return None
            if len(found) > 1:
                log.warning("several workers run for %s (%s); adopting %d, stopping the others",
                            spec.vm, ", ".join(map(str, found)), found[0])
                for other in found[1:]:
                    _kill(other, signal.SIGTERM)
            pid = found[0]
            self._write_pidfile(spec.vm, pid)
        try:
            started = _process_start_time(pid)
        except OSError:
            return None
        log.info("worker for %s adopted: pid %d", spec.vm, pid)
        return Worker(spec=spec, pid=pid, started=started, process=None)

    def forget(self, worker: Worker) -> None:
        """Drop an ended worker's pidfile (only if it still names that worker)."""
        if self._read_pidfile(worker.vm) == worker.pid:
            try:
                self.pidfile(worker.vm).unlink()
            except FileNotFoundError:
                pass

    def _write_pidfile(self, vm: str, pid: int) -> None:
        tmp = self.pidfile(vm).with_suffix(".pid.tmp")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, self.pidfile(vm))

    def _read_pidfile(self, vm: str) -> int | None:
        try:
            text = self.pidfile(vm).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def pidfile_vms(self) -> Iterable[str]:
        return [p.stem for p in self.pid_dir.glob("*.pid")]


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _process_start_time(pid: int) -> float:
    """When a process started, in epoch seconds (from /proc/<pid>/stat and the boot time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[19])              # field 22, starttime, counting from field 3 (state)
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")

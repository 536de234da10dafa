"""The guest's configuration: one object, read from the environment once.

The settings are those of the guest's libcuda.so.1 (guest-agent/libcuda/client.c reads them at
cuInit, with the same ranges). `GuestConfig.from_environ(env)` reads every `KVMGPU_*` variable
(`VARIABLES`, which docs/guest.md lists), checks each, and says which one is wrong and what it may
be: `kvmgpu-guest run` and `info` refuse a bad one before anything starts. The plain protocol
client (client.py) takes where the host is from a config (`Session.connect(config=...)`); without
one it uses `current()`, this process's, read from `os.environ` once. Unset or empty means the default.

The phase trace (`KVMGPU_TRACE`, `KVMGPU_TRACE_N`) is not here: both sides stamp it, and it is
read where it is stamped (kvmgpu_wire/trace.py), so that off it costs one bool.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields
from typing import Mapping

from kvmgpu_wire.protocol import MAX_BUFFERED

from .channel import AGENT_SOCKET

_CPUS = os.cpu_count() or 1
_MAX_BATCH = MAX_BUFFERED  # what the host's Connection buffers undecoded
_MAX_US = 1_000_000
_TRUE, _FALSE = ("1", "yes", "true", "on"), ("0", "no", "false", "off")


class ConfigError(ValueError):
    """A KVMGPU_* variable has a value the guest cannot use; the message names it and says what
    it may be."""


@dataclass(frozen=True)
class GuestConfig:
    """Every setting of the guest's library. The defaults are what an unset variable gives."""

    # where the host is (loopback; else the guest agent's socket; else the VM's devices)
    socket: str = ""
    shm: str = ""
    agent_socket: str = AGENT_SOCKET
    window: int = 0
    # calls
    batch_bytes: int = 4096
    first_batch: int = 512
    poll_us: int = 50
    mailbox: bool = True
    # bulk copies
    pipe_min: int = 1 << 20
    pipe_chunk: int = 16 << 20
    copier: bool = True
    copier_threads: int = min(8, _CPUS)
    copy_split: int = 64 << 10
    copy_spin_us: int = 200

    def __post_init__(self):
        for var in VARIABLES:
            var.check(getattr(self, var.field))

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> "GuestConfig":
        """The configuration `env` (default: os.environ) gives; ConfigError names a bad variable."""
        env = os.environ if env is None else env
        values = {}
        for var in VARIABLES:
            raw = env.get(var.name, "").strip()
            if raw:
                values[var.field] = var.parse(raw)
        return cls(**values)


@dataclass(frozen=True)
class Variable:
    """One environment variable: the field it sets, its range (ints: lo..hi; bools: 0 or 1;
    paths: any), and what it means (docs/guest.md's table says the same)."""

    name: str
    field: str
    meaning: str
    lo: int = 0
    hi: int = 1 << 62
    default: str = ""  # the default as docs/guest.md says it, where it is not one fixed value

    @property
    def kind(self) -> type:
        return _TYPES[self.field]

    def allowed(self) -> str:
        if self.kind is bool:
            return "0 or 1"
        if self.kind is str:
            return "a path"
        return f"a whole number from {self.lo} to {self.hi}" if self.hi < 1 << 62 else \
            f"a whole number of at least {self.lo}"

    def default_text(self) -> str:
        if self.default:
            return self.default
        value = getattr(GuestConfig, self.field)
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, str):
            return f"`{value}`" if value else "(none)"
        for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size and value % size == 0:
                return f"{value} ({value // size} {unit})"
        return str(value)

    def parse(self, raw: str):
        if self.kind is str:
            return raw
        if self.kind is bool:
            low = raw.lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise ConfigError(f"{self.name}={raw!r}: {self.meaning}; it must be {self.allowed()}")
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{self.name}={raw!r}: {self.meaning}; it must be {self.allowed()}") from None
        self.check(value, raw)
        return value

    def check(self, value, raw=None) -> None:
        if self.kind is str or self.kind is bool:
            if not isinstance(value, self.kind):
                raise ConfigError(f"{self.name}: must be {self.allowed()}, not {value!r}")
            return
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            shown = raw if raw is not None else value
            raise ConfigError(f"{self.name}={shown!r}: {self.meaning}; it must be {self.allowed()}")


# Why the defaults are what they are:
# - KVMGPU_BATCH_BYTES: small enough that the worker starts on a run of launches while the guest
#   queues the rest: the two sides then work in parallel; one write per ~40 launches.
# - KVMGPU_FIRST_BATCH: after a reply the worker (and often the GPU) is idle: the next batch goes out
#   this small, and each one after it twice as big up to BATCH_BYTES, so the GPU gets work at once.
#   Why 512: docs/performance.md, "Synchronous calls (latency)".
# - Bulk copies go in chunks of n/4, at least KVMGPU_PIPE_MIN and at most KVMGPU_PIPE_CHUNK bytes,
#   each copied into or out of the window by the copier (guest-agent/include/kvmgpu_copier.h;
#   KVMGPU_COPIER=0: without it): COPIER_THREADS - 1 helper threads and the calling one taking
#   COPY_SPLIT-byte pieces, the helpers spinning COPY_SPIN_US for the next copy before they sleep
#   (why, and why these numbers: docs/performance.md, "The guest's copier").
VARIABLES = (
    Variable("KVMGPU_SOCKET", "socket", "loopback: the worker's control socket (with KVMGPU_SHM)"),
    Variable("KVMGPU_SHM", "shm", "loopback: the worker's shared region file"),
    Variable("KVMGPU_AGENT_SOCKET", "agent_socket", "the guest agent's socket, used where it exists"),
    Variable("KVMGPU_WINDOW", "window", "bytes of the region a session asks for (0: all that is free; "
             "through the agent 1/16 of it)"),
    Variable("KVMGPU_BATCH_BYTES", "batch_bytes", "queued calls are written once the batch is this big",
             1, _MAX_BATCH),
    Variable("KVMGPU_FIRST_BATCH", "first_batch", "the first batch after a reply is written at this size "
             "(each next one twice as big, up to KVMGPU_BATCH_BYTES)", 1, _MAX_BATCH),
    Variable("KVMGPU_POLL_US", "poll_us", "µs to spin for a reply before blocking (0: block at once)",
             0, _MAX_US),
    Variable("KVMGPU_MAILBOX", "mailbox", "synchronous calls through the mailbox at the window's end "
             "(0: always the channel)"),
    Variable("KVMGPU_PIPE_MIN", "pipe_min", "the smallest chunk of a pipelined bulk copy", 1),
    Variable("KVMGPU_PIPE_CHUNK", "pipe_chunk", "the largest chunk of a pipelined bulk copy", 1),
    Variable("KVMGPU_COPIER", "copier", "bulk copies through the copier's threads (0: the calling thread alone)"),
    Variable("KVMGPU_COPIER_THREADS", "copier_threads", "the copier's threads, the calling one included",
             1, 16, default="8, at most the vCPUs"),
    Variable("KVMGPU_COPY_SPLIT", "copy_split", "the copier's piece; copies from twice this use it", 1),
    Variable("KVMGPU_COPY_SPIN_US", "copy_spin_us", "µs the copier's helpers spin for the next copy "
             "before they sleep", 0, _MAX_US),
)
_TYPES = {f.name: {"str": str, "int": int, "bool": bool}[str(f.type)] for f in fields(GuestConfig)}
assert sorted(v.field for v in VARIABLES) == sorted(_TYPES), "every setting has its variable"

_current: GuestConfig | None = None
_lock = threading.Lock()


def current() -> GuestConfig:
    """This process's configuration, read from os.environ the first time it is asked for."""
    global _current
    config = _current
    if config is None:
        with _lock:
            if _current is None:
                _current = GuestConfig.from_environ()
            config = _current
    return config


def forget() -> None:
    """Read the environment again at the next `current()` (tests, after they change it)."""
    global _current
    with _lock:
        _current = None


def table() -> str:
    """docs/guest.md's table of the variables (a test checks that the page has it as it is here)."""
    rows = ["| variable | default | meaning | allowed |", "| --- | --- | --- | --- |"]
    rows += [f"| `{v.name}` | {v.default_text()} | {v.meaning} | {v.allowed()} |" for v in VARIABLES]
    return "\n".join(rows) + "\n"

"""The guest's configuration: one object, read from the environment once.

`GuestConfig.from_environ(env)` reads every `KVMGPU_*` variable the Python client knows (`VARIABLES`,
which docs/guest.md lists), checks each, and says which one is wrong and what it may be. A session
takes a config (`Session.connect(config=...)`); without one it uses `current()`, this process's,
read from `os.environ` the first time a session connects. Unset or empty means the default.

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
_MAX_THREADS = 64
_TRUE, _FALSE = ("1", "yes", "true", "on"), ("0", "no", "false", "off")


class ConfigError(ValueError):
    """A KVMGPU_* variable has a value the guest cannot use; the message names it and says what
    it may be."""


@dataclass(frozen=True)
class GuestConfig:
    """Every setting of the Python client. The defaults are what an unset variable gives."""

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
    copy_threads: int = min(4, _CPUS)
    copy_piece: int = 1 << 20
    copy_part: int = 1 << 20
    copy_wake: bool = True
    copy_steal: bool = True
    piece_threads: int = min(3, min(4, _CPUS))
    pipe_min: int = 1 << 20
    pipe_chunk: int = 16 << 20
    dtoh_whole: int = 16 << 20
    dtoh_piece: int = 1 << 20
    stage_chunk: int = 16 << 20
    stage_slots: int = 2
    stage_max: int = 8 << 20
    # the copier (kvmgpu_guest/copier.c)
    copier: bool = True
    copier_threads: int = min(8, _CPUS)
    copy_split: int = 64 << 10
    copy_spin_us: int = 200
    copier_dtoh: bool = True

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
        if "piece_threads" not in values and "copy_threads" in values:
            values["piece_threads"] = min(3, values["copy_threads"])  # the default follows it
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
#   But never one frame alone: the launch of a launch + synchronise goes with its synchronise (one
#   message, which the mailbox and the worker take whole). Why 512: docs/performance.md,
#   "Synchronous calls (latency)".
# - KVMGPU_COPY_PIECE: a copy is split among threads in pieces of at least this: waking a thread
#   costs more than a smaller piece gains (docs/performance.md, "Tried and measured, not kept").
# - KVMGPU_COPY_PART: the pieces of a DtoH are copied out in parts of this, each by one thread, as
#   they land; the copy threads are woken when the call is sent (KVMGPU_COPY_WAKE), so that they are
#   up when the first piece lands, and once the last has landed this thread copies the parts no
#   pool thread has started yet (KVMGPU_COPY_STEAL).
# - The copier (kvmgpu_guest/copier.c, where it was built; KVMGPU_COPIER=0: without it): bulk copies
#   from two COPY_SPLITs go through it, COPIER_THREADS - 1 helper threads and this one taking
#   COPY_SPLIT-byte pieces, no GIL between them, the helpers spinning COPY_SPIN_US for the next copy
#   before they sleep (why, and why these numbers: docs/performance.md, "The guest's copier").
# - KVMGPU_PIECE_THREADS: threads that copy a DtoH's pieces out (this one and a pool): three, the GIL
#   being contended (the best number depends on the machine: docs/performance.md, "DtoH from 2 MiB
#   to 16 MiB").
# - Bulk copies go in chunks of n/4, at least KVMGPU_PIPE_MIN and at most KVMGPU_PIPE_CHUNK bytes.
# - KVMGPU_DTOH_WHOLE: a device-to-host copy up to this size goes in one piece, copied out by
#   COPY_THREADS threads (the DMA into the window is several times faster than one thread's copy out
#   of it: splitting the copy out gains more than overlapping it with the DMA of the next chunk)...
#   and, from twice KVMGPU_DTOH_PIECE, in pieces of it, each copied out as soon as it has landed
#   while the next is on its way (the piece size: docs/performance.md, "DtoH from 2 MiB to 16 MiB").
# - Synchronous host-to-device copies into memory the process allocated go through
#   KVMGPU_STAGE_SLOTS staging slots at the window's end, refilled as the host reports each slot's
#   copy done (MEMCPY_HTOD_STAGED): the same few MiB are written again and again, so they stay in
#   the CPU cache. A slot's bytes are copied in by COPY_THREADS threads, COPY_PIECE each. A slot is
#   KVMGPU_STAGE_CHUNK where the window allows (at least four times the slots), halved down to 1 MiB
#   where it does not; with slots under STAGE_ALL (a window under ~64 MiB), copies over
#   KVMGPU_STAGE_MAX go through the ring, whose chunks all the copy threads fill and beat small
#   slots at those sizes; with bigger slots every synchronous copy is staged (docs/performance.md,
#   "The staging slots are as big as the window allows").
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
    Variable("KVMGPU_COPY_THREADS", "copy_threads", "threads a bulk copy is split among", 1, _MAX_THREADS,
             default="4, at most the vCPUs"),
    Variable("KVMGPU_COPY_PIECE", "copy_piece", "the smallest piece of a copy a thread takes", 1),
    Variable("KVMGPU_COPY_PART", "copy_part", "a DtoH's landed pieces are copied out in parts this big", 1),
    Variable("KVMGPU_COPY_WAKE", "copy_wake", "wake the copy threads when a DtoH in pieces is sent"),
    Variable("KVMGPU_COPY_STEAL", "copy_steal", "once a DtoH has landed, copy the parts no thread has "
             "started yet on the calling thread"),
    Variable("KVMGPU_PIECE_THREADS", "piece_threads", "threads that copy a DtoH's pieces out",
             1, _MAX_THREADS, default="3, at most KVMGPU_COPY_THREADS"),
    Variable("KVMGPU_PIPE_MIN", "pipe_min", "the smallest chunk of a pipelined bulk copy", 1),
    Variable("KVMGPU_PIPE_CHUNK", "pipe_chunk", "the largest chunk of a pipelined bulk copy", 1),
    Variable("KVMGPU_DTOH_WHOLE", "dtoh_whole", "a DtoH up to this size goes in one piece (or in pieces "
             "of KVMGPU_DTOH_PIECE)"),
    Variable("KVMGPU_DTOH_PIECE", "dtoh_piece", "a DtoH from twice this size is copied out piece by "
             "piece as it lands (0: never)"),
    Variable("KVMGPU_STAGE_CHUNK", "stage_chunk", "a staging slot's size where the window allows",
             4096),
    Variable("KVMGPU_STAGE_SLOTS", "stage_slots", "staging slots for synchronous HtoD copies (under 2: "
             "none)", 0, 64),
    Variable("KVMGPU_STAGE_MAX", "stage_max", "with slots under 8 MiB, copies over this go through "
             "the ring"),
    Variable("KVMGPU_COPIER", "copier", "bulk copies through the copier, where it was built (0: without)"),
    Variable("KVMGPU_COPIER_THREADS", "copier_threads", "the copier's threads, the calling one included",
             1, 16, default="8, at most the vCPUs"),
    Variable("KVMGPU_COPY_SPLIT", "copy_split", "the copier's piece; copies from twice this use it", 1),
    Variable("KVMGPU_COPY_SPIN_US", "copy_spin_us", "µs the copier's helpers spin for the next copy "
             "before they sleep", 0, _MAX_US),
    Variable("KVMGPU_COPIER_DTOH", "copier_dtoh", "a DtoH's landed parts through the copier too"),
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

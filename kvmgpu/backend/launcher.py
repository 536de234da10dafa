"""The worker's driver calls on the hot path, in C (launcher.c, the extension module `_launcher`):
queued launches packed into records and launched in order by one call, one launch with its
argument bytes read where they arrived, and cuStreamSynchronize; and `count_repeats`, which finds
the frames that repeat a launch the worker validated (equal to it but for their sequence number
and argument bytes), so that a run of the same launch costs the worker one check, not one each.

The worker validates every launch in Python (dispatch.launch_run) before any of these sees it;
the C side reads nothing from the guest but the argument bytes whose size the worker checked and
the frames it compares, byte for byte, with one the worker checked.

The module is built when the package is installed (setup.py, an optional extension: a host
without a C compiler or Python's headers gets a working kvmgpu without it). Without it, or with
`KVMGPU_LAUNCHER=python`, the cuda backend makes the same calls through cuda-bindings, which cost
more a launch (docs/performance.md, "The C launch loop").
"""

from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import logging
import os
import struct

from kvmgpu_wire.ops import LAUNCH_RECORD_FORMAT

log = logging.getLogger("kvmgpu.backend")

# function, stream, the first launch's argument bytes' address, their size, the stride to the
# next launch's; grid x y z, block x y z, shared, how many launches the record stands for
# (struct kvmgpu_launch_record, guest-agent/include/kvmgpu_wire.h: both from the op specification)
RECORD = struct.Struct(LAUNCH_RECORD_FORMAT)
CAPACITY = 256  # records a buffer holds; a longer run is launched in pieces
CALLS = ("launch_records", "count_repeats", "launch", "stream_synchronize", "serve_repeats")  # what it must have
# why `serve_repeats` returned (launcher.c's TURN_*)
IDLE, OTHER, DEADLINE, LAUNCH_FAILED, SYNC_FAILED, RING = range(6)

_HERE = os.path.dirname(os.path.abspath(__file__))
_module = None


def library_path() -> str | None:
    """Where the built module is, or None."""
    found = sorted(p for suffix in importlib.machinery.EXTENSION_SUFFIXES
                   for p in glob.glob(os.path.join(_HERE, "_launcher" + suffix)))
    return found[0] if found else None


def load():
    """The built module, or OSError saying why there is none."""
    global _module
    if _module is None:
        path = library_path()
        if path is None:
            raise OSError(f"kvmgpu's launcher module is not built (no _launcher*.so in {_HERE})")
        try:
            spec = importlib.util.spec_from_file_location("kvmgpu.backend._launcher", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except ImportError as e:
            raise OSError(f"{path} is from another kvmgpu version or Python ({e}): reinstall "
                          "kvmgpu to rebuild it") from None
        missing = [name for name in CALLS if not hasattr(module, name)]
        if missing:
            raise OSError(f"{path} is from another kvmgpu version (no {', '.join(missing)}): "
                          "reinstall kvmgpu to rebuild it")
        _module = module
    return _module


class LaunchRecords:
    """A buffer of launch records and the call that launches them.

    `records` (a bytearray of `CAPACITY` records) is filled with `RECORD.pack_into(records,
    i * RECORD.size, ...)`, a record standing for `count` launches of one function and shape whose
    argument bytes lie `stride` apart; `launch(first, count, skip=0)` launches records
    first..first+count-1 in order, less the first `skip` launches of records[first], and returns
    `(record, repeat, error)`: where the launch the driver refused is and its CUresult, or
    `(first + count, 0, 0)` when all went. The argument bytes each record points at must stay
    where they are until then. `launch_fn` is the address of a function with cuLaunchKernel's C
    signature. `count_repeats` is the module's (launcher.c), for `Connection.take_launches`.
    """

    def __init__(self, launch_fn: int, capacity: int = CAPACITY):
        module = load()
        call = module.launch_records
        self.count_repeats = module.count_repeats
        self.capacity = capacity
        self.records = records = bytearray(capacity * RECORD.size)

        def launch(first: int, count: int, skip: int = 0) -> tuple[int, int, int]:
            return call(launch_fn, records, first, count, skip)
        self.launch = launch


class RepeatTurn:
    """The worker's C turn on one session's mailbox (launcher.c's `serve_repeats`): while the guest
    posts the same launch + synchronise again (a loop's `launch(); cuCtxSynchronize()`), each post
    is compared, launched, synchronised and answered in C with the GIL released, instead of one
    turn of the worker's Python loop each (docs/performance.md, "The C turn"). The worker enters
    it only after it served such a message itself, with every table and the gate as they were then
    (kvmgpu/worker/channel.py, `Channel.serve_repeats`). `launch_fn`, `ctx_sync_fn`,
    `stream_sync_fn`: the addresses of cuLaunchKernel, cuCtxSynchronize and cuStreamSynchronize
    (or functions with their C signatures); `context()`: the context cuCtxSynchronize is given
    (CUDA 13's takes one: cudaTypedefs.h's PFN_cuCtxSynchronize_v13000)."""

    def __init__(self, launch_fn: int, ctx_sync_fn: int, stream_sync_fn: int, context=lambda: 0):
        call = load().serve_repeats

        def serve(box, number: int, template: bytes, fixed: int, launch_size: int, function, shape: tuple,
                  stream, on_stream: bool, sync_stream, reply: bytes, deadline: float, idle_s: float,
                  turn_s: float) -> tuple[int, int, int, int, int, int, float]:
            return call(box, number, template, fixed, launch_size, launch_fn, function, shape, stream,
                        stream_sync_fn if on_stream else ctx_sync_fn, on_stream,
                        sync_stream if on_stream else context(), reply, deadline, idle_s, turn_s)
        self.serve = serve


def open_module():
    """The C module for the cuda backend, or None (and why, in the log) where it is not built,
    is stale, or `KVMGPU_LAUNCHER=python` asks for the cuda-bindings path."""
    if os.environ.get("KVMGPU_LAUNCHER", "c") == "python":
        return None
    try:
        return load()
    except OSError as e:
        log.warning("the worker's driver calls go through cuda-bindings (slower): %s", e)
        return None

"""The worker's launch loop in C (launcher.c): validated launches packed into records, launched in
order by one call.

The worker validates every queued launch in Python (dispatch.launch_run), packs it with
`RECORD.pack_into` into a `LaunchRecords` buffer, and `launch()` hands the buffer to
`kvmgpu_launch_records`, which calls the driver's `cuLaunchKernel` once per record. The C side
reads nothing from the guest but the argument bytes whose size the worker checked.

The library is built when the package is installed (setup.py, an optional extension: a host
without a C compiler gets a working kvmgpu without it). Without it, or with
`KVMGPU_LAUNCHER=python`, the cuda backend launches through cuda-bindings as before
(`CudaBackend.launch_at`). Measured on the H200: ~4.4 µs a launch from C against ~5.9 µs through
cuda-bindings (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import struct

log = logging.getLogger("kvmgpu.backend")

# function, stream, argument bytes' address, their size; grid x y z, block x y z, shared, pad
RECORD = struct.Struct("=4Q8I")
CAPACITY = 256  # records a buffer holds; a longer run is launched in pieces

_LIB_GLOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launcher*.so")
_lib = None


def library_path() -> str | None:
    """Where the built library is, or None."""
    found = sorted(glob.glob(_LIB_GLOB))
    return found[0] if found else None


def _load():
    global _lib
    if _lib is None:
        path = library_path()
        if path is None:
            return None
        lib = ctypes.CDLL(path)
        try:
            fn = lib.kvmgpu_launch_records
        except AttributeError:
            raise OSError(f"{path} is from another kvmgpu version: reinstall kvmgpu to rebuild "
                          "it") from None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        _lib = lib
    return _lib


class LaunchRecords:
    """A buffer of launch records and the call that launches them.

    `records` (a bytearray of `CAPACITY` records) is filled with `RECORD.pack_into(records,
    i * RECORD.size, ...)`; `launch(first, count)` launches records first..first+count-1 in order
    and returns `(launched, error)`: how many went, and the CUresult of the one the driver refused
    (0 when all went). The argument bytes each record points at must stay where they are until then.
    `launch_fn` is the address of a function with cuLaunchKernel's C signature.
    """

    def __init__(self, launch_fn: int, capacity: int = CAPACITY):
        lib = _load()
        if lib is None:
            raise OSError(f"kvmgpu's launcher library is not built (no {_LIB_GLOB})")
        self.capacity = capacity
        self.records = bytearray(capacity * RECORD.size)
        self._records = (ctypes.c_char * len(self.records)).from_buffer(self.records)
        self._error = ctypes.c_int(0)
        size = RECORD.size
        call, fn, recs, err = (lib.kvmgpu_launch_records, launch_fn,
                               ctypes.addressof(self._records), ctypes.addressof(self._error))
        error = self._error

        def launch(first: int, count: int) -> tuple[int, int]:
            done = call(fn, recs + first * size, count, err)
            return done, error.value
        self.launch = launch


def open_records(launch_fn: int) -> LaunchRecords | None:
    """Records launched by `launch_fn` through the C loop, or None (and why, in the log) where
    the library is not built or `KVMGPU_LAUNCHER=python` asks for the cuda-bindings path."""
    if os.environ.get("KVMGPU_LAUNCHER", "c") == "python":
        return None
    try:
        return LaunchRecords(launch_fn)
    except OSError as e:
        log.warning("queued launches go through cuda-bindings (slower): %s", e)
        return None

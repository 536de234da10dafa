"""The worker's launcher thread in C (launcher.c): validated launches packed into records and
launched in order on a native thread, while the worker goes on checking the next ones.

The worker validates every queued launch in Python (dispatch.launch_run), packs it with
`RECORD.pack_into` into the ring `Launcher.records` at slot `n % capacity` and posts it
(`post(n + 1)`); the thread calls the driver's `cuLaunchKernel` for each posted record, in order,
in the VM's context. `finish()` waits until all posted records are launched and says how many
the driver refused (each refused record's `result` field holds its CUresult). The argument bytes
a record points at must stay where they are, and its slot must not be packed again, until then.
The C side reads nothing from the guest but the argument bytes whose size the worker checked.

The library is built when the package is installed (setup.py, an optional extension: a host
without a C compiler gets a working kvmgpu without it). Without it, or with
`KVMGPU_LAUNCHER=python`, the cuda backend launches through cuda-bindings on the worker's own
thread (`CudaBackend.launch_at`). Measured on the H200 (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import struct
import weakref

log = logging.getLogger("kvmgpu.backend")

# function, stream, argument bytes' address, their size; grid x y z, block x y z, shared; result
RECORD = struct.Struct("=4Q7Ii")
RESULT = struct.Struct("=i")
RESULT_AT = RECORD.size - RESULT.size  # where a record's result is
CAPACITY = 256  # records the ring holds (a power of two); a longer run is finished in pieces
COUNTER = 0xFFFFFFFF  # the C side's counters are 32-bit and wrap

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
        lib = ctypes.CDLL(path)  # calls release the GIL: the thread's driver may be Python (tests)
        p, u = ctypes.c_void_p, ctypes.c_uint
        for name, args, res in (("kvmgpu_open", [p, p, p, u], p), ("kvmgpu_records", [p], p),
                                ("kvmgpu_post", [p, u], None), ("kvmgpu_finish", [p], ctypes.c_int),
                                ("kvmgpu_close", [p], None)):
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise OSError(f"{path} is from another kvmgpu version (no {name}): reinstall "
                              "kvmgpu to rebuild it") from None
            fn.argtypes, fn.restype = args, res
        _lib = lib
    return _lib


class Launcher:
    """A launcher thread for one CUDA context and its ring of `capacity` records.

    `launch_fn` and `set_current_fn`: addresses of functions with cuLaunchKernel's and
    cuCtxSetCurrent's C signatures; `context`: the CUcontext the thread makes current. `posted`
    is the worker's count of records posted so far (mod 2^32), which the worker keeps.
    """

    def __init__(self, launch_fn: int, set_current_fn: int, context: int, capacity: int = CAPACITY):
        lib = _load()
        if lib is None:
            raise OSError(f"kvmgpu's launcher library is not built (no {_LIB_GLOB})")
        handle = lib.kvmgpu_open(launch_fn, set_current_fn, context, capacity)
        if not handle:
            raise OSError("cannot start the launcher thread")
        self.capacity = capacity
        self.posted = 0
        ring = (ctypes.c_char * (capacity * RECORD.size)).from_address(lib.kvmgpu_records(handle))
        self.records = memoryview(ring).cast("B")
        self._close = weakref.finalize(self, lib.kvmgpu_close, handle)
        post, finish = lib.kvmgpu_post, lib.kvmgpu_finish
        self.post = lambda n: post(handle, n)  # records up to n (a count, mod 2^32) may go
        self.finish = lambda: finish(handle)  # wait for them; how many the driver refused

    def result(self, n: int) -> int:
        """The CUresult of record `n` (a count, as posted), once finished."""
        return RESULT.unpack_from(self.records, (n % self.capacity) * RECORD.size + RESULT_AT)[0]

    def close(self) -> None:
        """Stop the thread (after what is posted) and free the ring."""
        if self._close.alive:
            self.records.release()
            self._close()


def open_launcher(launch_fn: int, set_current_fn: int, context: int) -> Launcher | None:
    """A launcher thread for `context`, or None (and why, in the log) where the library is not
    built or `KVMGPU_LAUNCHER=python` asks for the cuda-bindings path."""
    if os.environ.get("KVMGPU_LAUNCHER", "c") == "python":
        return None
    try:
        return Launcher(launch_fn, set_current_fn, context)
    except OSError as e:
        log.warning("queued launches go through cuda-bindings (slower): %s", e)
        return None

"""For the worker probes: a driver that does nothing (compiled here with cc) and the sim backend
whose launches, stream waits and C turn go to it through the C module, as the cuda backend's go to
libcuda, so that what a probe times is the worker's own Python and the module's calls."""
import ctypes
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "guest-agent"), str(ROOT), str(ROOT / "tests" / "worker")]
from kvmgpu.backend import launcher  # noqa: E402
from kvmgpu.backend.base import Capabilities  # noqa: E402
from kvmgpu.backend.launcher import LaunchRecords, RepeatTurn  # noqa: E402
from kvmgpu.backend.sim import SimBackend  # noqa: E402

_tmp = tempfile.mkdtemp()
_src, _lib = os.path.join(_tmp, "noop.c"), os.path.join(_tmp, "noop.so")
Path(_src).write_text("int launch(void *f, unsigned a, unsigned b, unsigned c, unsigned d, unsigned e,"
                      " unsigned g, unsigned h, void *s, void **p, void **x) { return 0; }\n"
                      "int sync(void *s) { return 0; }\n"
                      "int ctx_sync(void *c) { return 0; }\n")
subprocess.run(["cc", "-O2", "-shared", "-fPIC", _src, "-o", _lib], check=True)
_noop = ctypes.CDLL(_lib)
LAUNCH, SYNC, CTX_SYNC = (ctypes.cast(f, ctypes.c_void_p).value for f in (_noop.launch, _noop.sync, _noop.ctx_sync))


class NoDriver(SimBackend):
    """Queued launches as records to the C loop, one launch through the module's `launch`, stream
    waits through its `stream_synchronize`: all to the driver that does nothing."""

    def __init__(self, **kw):
        super().__init__(**kw)
        c = launcher.load()

        def launch_in(f, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes):
            c.launch(LAUNCH, f.address, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes)

        def stream_synchronize(stream):
            c.stream_synchronize(SYNC, stream)
        self.stream_synchronize = stream_synchronize
        self.capabilities = Capabilities(launch_records=LaunchRecords(LAUNCH), launch_in=launch_in,
                                         launch_flat=self.launch_flat,
                                         repeats=RepeatTurn(LAUNCH, CTX_SYNC, SYNC))

    def module_get_function(self, module, name):
        fn, layout = super().module_get_function(module, name)
        fn.address = 0x10000
        return fn, layout

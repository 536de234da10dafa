"""The worker's own cost of a queued launch, without a GPU: batches of 40 QUEUED LAUNCH frames (as
the guest sends them) through `Channel.receive` on the sim backend, with the C launch loop calling
a driver that does nothing (compiled here), repeats found (`count_repeats`) and not, batch sets in
turn in one process; and the same with two shapes alternating (no frame repeats the one before).

    .venv/bin/python tests/worker/probes/launch_path_cost.py     (repository root; needs cc)
"""
import ctypes, os, struct, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "guest-agent"), str(ROOT), str(ROOT / "tests" / "worker")]
from rawguest import Host  # noqa: E402
from kvmgpu_guest.protocol import Op  # noqa: E402
from kvmgpu.backend.launcher import LaunchRecords  # noqa: E402
from kvmgpu.backend.sim import SimBackend  # noqa: E402

tmp = tempfile.mkdtemp()
src, lib = os.path.join(tmp, "noop.c"), os.path.join(tmp, "noop.so")
Path(src).write_text("int launch(void *f, unsigned a, unsigned b, unsigned c, unsigned d, unsigned e,"
                     " unsigned g, unsigned h, void *s, void **p, void **x) { return 0; }\n")
subprocess.run(["cc", "-O2", "-shared", "-fPIC", src, "-o", lib], check=True)
NOOP = ctypes.cast(ctypes.CDLL(lib).launch, ctypes.c_void_p).value


class NoDriver(SimBackend):
    """The sim backend whose queued launches go through the C loop to a driver that does nothing."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.launch_records = LaunchRecords(NOOP)

    def module_get_function(self, module, name):
        fn, layout = super().module_get_function(module, name)
        fn.address = 0x10000
        return fn, layout


h = Host(Path(tmp), backend=NoDriver)
g = h.guest()
fh, _ = g.function(g.load(), "spin")
records = h.vgpu.backend.launch_records
count_repeats = records.count_repeats
K, REPS = 40, 2000


def batch(alternate: bool) -> bytes:
    return b"".join(g.frame(Op.LAUNCH, fh, 1 + (i % 2 if alternate else 0), 1, 1, 1, 1, 1, 0, 0,
                            blob=struct.pack("<q", i), queued=True) for i in range(K))


def per_launch(msg: bytes) -> float:
    t = time.perf_counter()
    for _ in range(REPS):
        g.channel.receive(msg)
    return (time.perf_counter() - t) / REPS / K * 1e6


for alternate in (False, True):
    msg = batch(alternate)
    best = {"repeats found": [], "repeats not looked for": []}
    for _ in range(7):
        for name in best:
            records.count_repeats = count_repeats if name == "repeats found" else None
            best[name].append(per_launch(msg))
    what = "two shapes alternating" if alternate else "one shape, own arguments"
    print(f"{what}: µs of worker a launch, best / median of 7 --",
          ", ".join(f"{k} {min(v):.2f} / {sorted(v)[3]:.2f}" for k, v in best.items()))
h.close()

"""The worker's own cost of a queued launch, without a GPU: batches of 40 QUEUED LAUNCH frames (as
the guest sends them) through `Channel.receive` on the sim backend, with the C launch loop calling
a driver that does nothing (compiled here), repeats found (`count_repeats`) and not, batch sets in
turn in one process; and the same with two shapes alternating (no frame repeats the one before).

    .venv/bin/python bench/sim/launch_path_cost.py     (repository root; needs cc)
"""
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kvmgpu_wire.protocol import Op  # noqa: E402

from nodriver import NoDriver  # noqa: E402  (and the paths)
from rawguest import Host  # noqa: E402

h = Host(Path(tempfile.mkdtemp()), backend=NoDriver)
g = h.guest()
fh, _ = g.function(g.load(), "spin")
records = h.vgpu.backend.capabilities.launch_records
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

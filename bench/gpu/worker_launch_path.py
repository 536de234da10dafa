"""The worker's own cost per queued launch through each launch path, side by side in one process:
the C launch loop (kvmgpu/backend/launcher.c) against cuda-bindings (`launch_in`), batch by batch
in turn, on the same worker, context and kernel. The guest is left out: batches of QUEUED LAUNCH
frames (as the guest sends them, 40 to a batch) go straight into the worker's channel, so what is
timed is decode, checks and launch.
Usage (repository root, on a GPU machine, the launcher built):
    python3 bench/gpu/worker_launch_path.py"""

import dataclasses
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "guest-agent"), str(ROOT), str(ROOT / "tests" / "worker")]

from kvmgpu.backend.cuda import CudaBackend  # noqa: E402
from kvmgpu_wire.protocol import Op  # noqa: E402

from rawguest import Host  # noqa: E402

PER_BATCH, BATCHES, ROUNDS = 40, 50, 15


def main() -> None:
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm"))
    host = Host(tmp, gmem=1 << 30, backend=lambda **kw: CudaBackend(0))
    try:
        g = host.guest(window=1 << 20)
        f, _ = g.function(g.load(), "spin")
        backend = host.vgpu.backend
        caps = backend.capabilities
        records = caps.launch_records
        assert records is not None, "the launcher library is not built (pip install -e . or setup.py build_ext)"
        batch = b"".join(g.frame(Op.LAUNCH, f, 1, 1, 1, 1, 1, 1, 0, 0, blob=struct.pack("<q", 0),
                                 queued=True) for _ in range(PER_BATCH))
        receive = g.channel.receive
        paths = {"C loop": records, "cuda-bindings": None}
        cpu = {p: [] for p in paths}  # the worker's time in receive(), per launch
        total = {p: [] for p in paths}  # until the GPU ran them all, per launch
        for _ in range(ROUNDS):
            for path, recs in paths.items():
                backend.capabilities = dataclasses.replace(caps, launch_records=recs)
                host.vgpu.bind()
                g.ok(Op.CTX_SYNCHRONIZE)
                t0 = time.perf_counter()
                spent = 0.0
                for _ in range(BATCHES):
                    t = time.perf_counter()
                    receive(batch)
                    spent += time.perf_counter() - t
                g.ok(Op.CTX_SYNCHRONIZE)
                n = BATCHES * PER_BATCH
                cpu[path].append(spent / n * 1e6)
                total[path].append((time.perf_counter() - t0) / n * 1e6)
        backend.capabilities = caps
        host.vgpu.bind()
        for path in paths:
            c, t = sorted(cpu[path]), sorted(total[path])
            print(f"{path:14} worker per launch: best {c[0]:.2f} µs, median {c[len(c) // 2]:.2f}; "
                  f"until run: best {t[0]:.2f}, median {t[len(t) // 2]:.2f}")
    finally:
        host.close()
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

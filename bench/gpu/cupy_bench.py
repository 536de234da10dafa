"""A CuPy workload of a few thousand operations, native against forwarded, side by side in one run
(issue 21: "a CuPy workload of at least a thousand operations within 5 %"). On the GPU machine:

    python3 bench/gpu/cupy_bench.py [--out DIR] [--rounds 3] [--reps 5] [--iters 100]

The workload (`workload`, one pass ending in a synchronise; no host synchronisation inside):
ITERS iterations of conjugate gradient on a dense SPD system (N x N float32: a cuBLAS gemv, two
dot products as multiply + sum reductions, the vector updates on 0-d device scalars; 13
operations an iteration), ITERS steps of a 2D heat equation on a GRID x GRID float32 grid (five-
point stencil on slices, the update, a sum reduction into an energy: 9), ITERS steps on small
(256) vectors (multiply, add, tanh, max: 4) and, every tenth iteration, a cuBLAS matmul of 1024 x
1024 float32 matrices and its scaling (2). At the defaults 2680 CuPy operations, each at least
one kernel; the worker's launch counter, read around each forwarded run, is printed beside it.
(`--no-cublas`: the gemv as a multiply and a row sum, no matmul, 2760 operations; where cuBLAS
does not work forwarded.)

Each round runs the workload in two processes on the same GPU, one after the other: natively
(CuPy on the GPU's own driver) and as a guest (the GPU hidden from it, libcuda.so.1 first on its
loader's path, a loopback worker on the cuda backend at compute 100, bench/gpu/loopback_vms.py). Each
process warms up once (kernels compiled or loaded, cuBLAS's handle), then times REPS passes and
keeps the best. The ratio is forwarded over native time (target <= 1.05); the median of the rounds
is the figure, each round's beside it. Each side's checksum (the result's sums) must agree.
Writes DIR/cupy_bench.json; exits 1 when a run failed or the results differ. (`--backend sim`
tries the harness without a GPU or CuPy; `guest --xp numpy` runs the workload on numpy, to try
its code.)"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback_vms import LoopbackVM, begin  # noqa: E402

TARGET = 1.05


def workload(xp, data: dict, iters: int, cublas: bool = True) -> tuple[list, int]:
    """One pass; returns the arrays whose sums are the checksum, and the operations it issued.
    (cublas=False: the gemv as a multiply and a row sum, the matmul left out.)"""
    a, b = data["spd"], data["rhs"]
    x = xp.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = (r * r).sum()
    ops = 5
    u = data["grid"].copy()
    energy = xp.zeros((), dtype=u.dtype)
    v, w, bias = data["small"].copy(), data["small_w"], data["small_b"]
    m, mw = data["mat"].copy(), data["mat_w"]
    peak = xp.zeros((), dtype=v.dtype)
    ops += 5
    for i in range(iters):
        # conjugate gradient: 13 operations
        ap = a @ p if cublas else (a * p).sum(axis=1)
        ops += 0 if cublas else 1
        pap = (p * ap).sum()
        alpha = rr / pap
        x += alpha * p
        r -= alpha * ap
        rr_new = (r * r).sum()
        beta = rr_new / rr
        p = r + beta * p
        rr = rr_new
        # heat equation: 9
        lap = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
        u[1:-1, 1:-1] += 0.1 * lap
        energy += u.sum()
        # small vectors: 4
        v = xp.tanh(v * w + bias)
        peak = xp.maximum(peak, v.max()) if i % 2 else v.max()
        ops += 13 + 9 + 4 + (1 if i % 2 else 0)
        # a medium matmul every tenth iteration: 2
        if i % 10 == 0 and cublas:
            m = (m @ mw) * (1.0 / 32)
            ops += 2
    return [x, u, energy, v, peak, m], ops


def inputs(xp, n: int, grid: int) -> dict:
    """The same inputs on either side (numpy's generator, then copied in)."""
    import numpy as np
    g = np.random.default_rng(0)
    q = g.standard_normal((n, n), dtype=np.float32) / np.float32(np.sqrt(n))
    spd = q @ q.T + np.eye(n, dtype=np.float32) / 100  # condition ~400: CG still converging after ITERS
    host = {"spd": spd, "rhs": g.standard_normal(n, dtype=np.float32),
            "grid": g.random((grid, grid), dtype=np.float32), "small": g.standard_normal(256, dtype=np.float32),
            "small_w": g.standard_normal(256, dtype=np.float32), "small_b": g.standard_normal(256, dtype=np.float32),
            "mat": g.standard_normal((1024, 1024), dtype=np.float32) / 32,
            "mat_w": g.standard_normal((1024, 1024), dtype=np.float32)}
    return {k: xp.asarray(v) for k, v in host.items()}


def guest(a) -> int:
    """Warm up, time REPS passes, print one JSON line."""
    if a.xp == "numpy":
        import numpy as xp

        def sync():
            pass
    else:
        import cupy as xp

        def sync():
            xp.cuda.Device().synchronize()
    data = inputs(xp, a.n, a.grid)
    out, ops = workload(xp, data, a.iters, not a.no_cublas)  # warm-up
    sync()
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        out, ops = workload(xp, data, a.iters, not a.no_cublas)
        sync()
        times.append(time.perf_counter() - t)
    checksum = [float(o.sum()) for o in out]
    print(json.dumps({"best_s": min(times), "times_s": times, "ops": ops, "checksum": checksum}), flush=True)
    return 0


def run(cmd: list[str], env: dict, log: Path) -> dict | None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log.write_text(proc.stdout + proc.stderr)
    lines = [s for s in proc.stdout.splitlines() if s.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"  {log.name}: exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-600:]}")
        return None
    return json.loads(lines[-1])


def launches(vm: LoopbackVM) -> int:
    return int(vm.fresh_stats().get("calls", {}).get("LAUNCH", 0))


def same(x: list, y: list) -> bool:
    return len(x) == len(y) and all(abs(p - q) <= 1e-3 * max(1.0, abs(p), abs(q)) for p, q in zip(x, y))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", choices=["guest"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--n", type=int, default=2048, help="the CG system's size")
    ap.add_argument("--grid", type=int, default=1024, help="the heat equation's grid side")
    ap.add_argument("--no-cublas", action="store_true", help="no cuBLAS: the gemv as CuPy kernels, no matmul")
    ap.add_argument("--backend", choices=["cuda", "sim"], default="cuda")
    ap.add_argument("--xp", choices=["cupy", "numpy"], default="cupy", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode == "guest":
        return guest(a)
    if min(a.rounds, a.reps, a.iters, a.n) < 1 or a.grid < 3:
        ap.error("--rounds, --reps, --iters and --n must be at least 1, --grid at least 3")
    out, lib, hide, gpu = begin(a.out, "kvmgpu-cupy-bench.", a.backend)
    child = [sys.executable, str(Path(__file__).resolve()), "guest", "--reps", str(a.reps), "--iters", str(a.iters),
             "--n", str(a.n), "--grid", str(a.grid), "--xp", a.xp] + (["--no-cublas"] if a.no_cublas else [])
    board = Path(tempfile.mkdtemp(prefix="kvmgpu-cupy-board."))
    vm = LoopbackVM(out, "cupy", lib, backend=a.backend, compute=100, mode="share", compute_dir=board)
    rounds, failed = [], False
    try:
        for k in range(1, a.rounds + 1):
            native = run(child, dict(os.environ), out / f"native_{k}.txt")
            before = launches(vm)
            forwarded = run(hide + child, vm.guest_env(), out / f"forwarded_{k}.txt")
            kernels = (launches(vm) - before) / (a.reps + 1) if forwarded else None
            failed |= native is None or forwarded is None
            if native and forwarded:
                agree = same(native["checksum"], forwarded["checksum"])
                failed |= not agree
                rounds.append({"native_s": native["best_s"], "forwarded_s": forwarded["best_s"],
                               "ratio": forwarded["best_s"] / native["best_s"], "ops": native["ops"],
                               "kernels_forwarded": kernels, "results_agree": agree, "native": native,
                               "forwarded": forwarded})
                results = "agree" if agree else f"DIFFER: {native['checksum']} {forwarded['checksum']}"
                print(f"  round {k}: native {native['best_s'] * 1e3:.2f} ms, forwarded "
                      f"{forwarded['best_s'] * 1e3:.2f} ms, ratio {rounds[-1]['ratio']:.3f}; {native['ops']} "
                      f"operations, {kernels:.0f} kernels launched a pass forwarded; results {results}")
            else:
                print(f"  round {k}: native {'ok' if native else 'FAILED'}, "
                      f"forwarded {'ok' if forwarded else 'FAILED'}")
    finally:
        vm.stop()
    report = {"gpu": gpu, "backend": a.backend, "target_ratio": TARGET, "rounds": rounds,
              "worker_calls": vm.stats().get("calls")}
    ok = bool(rounds) and not failed
    if rounds:
        ratio = statistics.median(r["ratio"] for r in rounds)
        report["ratio"] = ratio
        verdict = ("PASS" if ratio <= TARGET else "MISS") if a.backend == "cuda" else "not judged on the sim"
        each = " ".join(f"{r['ratio']:.3f}" for r in rounds)
        print(f"== forwarded / native {ratio:.3f} (target <= {TARGET}: {verdict}) [{each}], "
              f"{rounds[0]['ops']} operations a pass")
        few = [r["kernels_forwarded"] for r in rounds if r["kernels_forwarded"] < 1000]
        if a.backend == "cuda" and few:  # (what the worker launched: the proof that the passes were forwarded)
            print(f"== FAILED: the worker launched fewer than a thousand kernels a forwarded pass ({few})")
            ok = False
    (out / "cupy_bench.json").write_text(json.dumps(report, indent=1))
    print(f"== {'ran' if ok else 'FAILED'}; {out / 'cupy_bench.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

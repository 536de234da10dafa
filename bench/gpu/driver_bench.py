"""Native C against the same C forwarded: bench/gpu/driver_bench.c run on the GPU's own driver and on
kvmgpu's libcuda.so.1 (a loopback worker on the cuda backend, the GPU hidden from the program),
side by side, round by round, with the ratios and issue 21's targets. On the GPU machine:

    python3 bench/gpu/driver_bench.py [--out DIR] [--rounds 3] [--max-mib 1024] [--prebuilt DIR]

Builds guest-agent/libcuda into DIR/lib and the program with the C compiler against CUDA's cuda.h
(found beside nvcc or in $CUDA_HOME/include); where the GPU machine has no cuda.h, build it
elsewhere with `--build-only DIR` (inside the tree, so that it travels) and pass `--prebuilt DIR`.
Writes DIR/driver_bench.json and prints the table; exits 1 when a run fails. (`--backend sim`
tries it without a GPU: the forwarded runs work, the native ones cannot.)"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PTX = ROOT / "tests" / "kernels" / "kernels.ptx"
SOURCE = Path(__file__).with_name("driver_bench.c")
WITHOUT_GPU = Path(__file__).with_name("without_gpu.sh")

# figure prefix -> (better when, target ratio forwarded/native)
TARGETS = {
    "queued_launch_us": ("lower", 1.1),
    "launch_sync_us": ("lower", 1.5),
    "htod_pageable": ("higher", 1.0),
    "dtoh_pageable": ("higher", 1.0),
    "htod_pinned": ("higher", 0.95),
    "dtoh_pinned": ("higher", 0.95),
}


def cuda_include() -> Path:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    for d in (Path(os.path.realpath(nvcc)).parent.parent / "include",
              Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"):
        if (d / "cuda.h").exists():
            return d
    sys.exit("no cuda.h beside nvcc or in $CUDA_HOME/include: build with --build-only DIR where it is, "
             "then run with --prebuilt DIR")


def build_program(dest: Path, lib: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "driver_bench"
    subprocess.run(["cc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", f"-I{cuda_include()}", str(SOURCE),
                    f"-L{lib}", "-lcuda", "-o", str(out)], check=True)
    return out


def start_worker(out: Path, backend: str) -> tuple[subprocess.Popen, dict]:
    sock, shm = out / "worker.sock", Path(f"/dev/shm/kvmgpu-driver-bench-{os.getpid()}")
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'guest-agent'}:{ROOT}")
    code = ("import sys\nfrom kvmgpu.worker.server import WorkerConfig, serve\n"
            "serve(WorkerConfig(backend=sys.argv[1], gmem=8 << 30, socket=sys.argv[2], shm=sys.argv[3],"
            " region_size=256 << 20, vm='driver-bench', stats_file=sys.argv[4]))")
    worker = subprocess.Popen([sys.executable, "-c", code, backend, str(sock), str(shm), str(out / "stats.json")],
                              env=env, stdout=open(out / "worker.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(300):
        if sock.exists():
            break
        if worker.poll() is not None:
            sys.exit(f"the worker did not start: {(out / 'worker.log').read_text()}")
        time.sleep(0.1)
    return worker, {"KVMGPU_SOCKET": str(sock), "KVMGPU_SHM": str(shm)}


def hide_gpu() -> list[str]:
    """The command prefix that runs a program without the GPU (as in a VM)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-m", str(WITHOUT_GPU)]
    return ["env", "CUDA_VISIBLE_DEVICES="]


def run(cmd: list[str], env: dict, log: Path) -> dict[str, float]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log.write_text(proc.stdout + proc.stderr)
    figures = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith(("FAIL", "DONE")):
            figures[parts[0]] = float(parts[1])
    if proc.returncode != 0 or "DONE" not in proc.stdout:
        print(f"  {log.name}: exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-400:]}")
        return {}
    return figures


def target_of(figure: str):
    return next((t for prefix, t in TARGETS.items() if figure.startswith(prefix)), None)


def report(rounds: list[tuple[dict, dict]]) -> tuple[list[dict], bool]:
    rows, ok = [], True
    figures = [f for f in rounds[0][0] if all(f in n and f in w for n, w in rounds)]
    for f in figures:
        better, target = target_of(f)
        ratios = [w[f] / n[f] for n, w in rounds]
        ratio = statistics.median(ratios)
        passed = ratio <= target if better == "lower" else ratio >= target
        ok &= passed
        rows.append({"figure": f, "native": statistics.median(n[f] for n, _ in rounds),
                     "forwarded": statistics.median(w[f] for _, w in rounds), "ratio": ratio,
                     "target": f"{'<=' if better == 'lower' else '>='} {target}", "pass": passed, "ratios": ratios})
    return rows, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-mib", type=int, default=1024)
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--prebuilt", type=Path, help="a directory with driver_bench built by --build-only")
    ap.add_argument("--build-only", type=Path, metavar="DIR")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="kvmgpu-driver-bench."))
    out.mkdir(parents=True, exist_ok=True)
    lib = out / "lib"
    subprocess.run([sys.executable, str(ROOT / "guest-agent" / "libcuda" / "build.py"), str(lib)], check=True,
                   stdout=subprocess.DEVNULL)
    if args.build_only:
        print(f"built {build_program(args.build_only, lib)} (run with --prebuilt {args.build_only})")
        return 0
    program = (args.prebuilt / "driver_bench") if args.prebuilt else build_program(out, lib)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else "no GPU"
    print(f"== {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {gpu}; results in {out}")
    worker, guest_env = start_worker(out, args.backend)
    hide = hide_gpu()
    cmd = [str(program), str(PTX), str(args.max_mib)]
    rounds, failed = [], False
    try:
        for r in range(1, args.rounds + 1):
            native = run(cmd, dict(os.environ), out / f"native_{r}.txt")
            forwarded = run(hide + ["env", f"LD_LIBRARY_PATH={lib}"] + cmd, dict(os.environ, **guest_env),
                            out / f"forwarded_{r}.txt")
            failed |= not native or not forwarded
            if native and forwarded:
                rounds.append((native, forwarded))
            print(f"  round {r}: native {'ok' if native else 'FAILED'}, forwarded {'ok' if forwarded else 'FAILED'}")
    finally:
        worker.terminate()
        worker.wait()
        Path(guest_env["KVMGPU_SHM"]).unlink(missing_ok=True)
    if not rounds:
        print("== no round where both sides ran")
        return 1
    rows, ok = report(rounds)
    print(f"{'figure':26} {'native':>9} {'forwarded':>9} {'ratio':>6}  target     [ratio in each round]")
    for row in rows:
        print(f"{row['figure']:26} {row['native']:9.3f} {row['forwarded']:9.3f} {row['ratio']:6.2f}  "
              f"{row['target']:6} {'PASS' if row['pass'] else 'MISS'}  [{' '.join(f'{x:.2f}' for x in row['ratios'])}]")
    stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").exists() else {}
    json.dump({"gpu": gpu, "rounds": len(rounds), "rows": rows, "worker_calls": stats.get("calls")},
              open(out / "driver_bench.json", "w"), indent=1)
    print(f"== {'every target met' if ok else 'targets missed'}; the worker's calls: {json.dumps(stats.get('calls'))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

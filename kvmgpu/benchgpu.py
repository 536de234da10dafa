"""Native against forwarded, side by side on one GPU: `python -m kvmgpu.benchgpu [--json FILE]`.

The same workload functions run on `cuda.bindings.driver` in this process (native) and on
`kvmgpu_guest.driver` (the same API, forwarded) against a loopback worker on the cuda backend.
Figures: queued launch, launch + synchronize round trip, HtoD / DtoH bandwidth 1 MiB..1 GiB
(native pageable and pinned as well), and an iterative stencil of >= 1000 launches with data in
and out. The two sides take turns, repetition by repetition, and the best of each counts; the
whole is done in several rounds and the table shows, per figure, the round with the median ratio
(the ratios of all rounds beside it: single runs on these machines move by tens of percent).
Compute shares and the memory quota are measured by tests/gpu (see run_on_h200.sh).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PTX = ROOT / "tests" / "kernels" / "kernels.ptx"
P, I32, I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
MiB = 1 << 20
# KVMGPU_BENCH_GATE=0 runs the worker without the compute gate (to measure what the gate costs).
WORKER = ("import os, sys; import kvmgpu.compute as C; from kvmgpu.sizes import parse_size; "
          "os.environ.get('KVMGPU_BENCH_GATE', '1') == '0' and setattr(C, 'open_gate', lambda *a, **k: None); "
          "from kvmgpu.worker.server import WorkerConfig, serve; a = sys.argv[1:]; "
          "serve(WorkerConfig(backend=a[7], gmem=parse_size(a[0], 'gmem'), socket=a[1], shm=a[2], "
          "region_size=parse_size(a[3], 'region'), vm=a[4], compute=int(a[5]), compute_mode=a[6]))")


def _ok(r):
    if r[0]:
        raise RuntimeError(f"CUDA error {int(r[0])}")
    return r[1] if len(r) == 2 else (r[1:] if len(r) > 2 else None)


def _best(fn, repeat=3):
    return min(fn() for _ in range(repeat))


def _gb_per_s(nbytes: int) -> Callable[[float], float]:
    """Seconds to move `nbytes` -> GB/s."""
    return lambda t: nbytes / t / 1e9


class Workloads:
    """The workloads on one driver module `cu` (native or forwarded), each as a function that runs
    one repetition and returns its time in seconds (`figures()`); `main` runs every figure on both
    sides in turn, repetition by repetition, so that a drift of the GPU's or the host's speed during
    the run (the same 1000 kernels took 5.4 ms of GPU time in one run and 7.4 ms in the next) falls
    on both sides alike."""

    def __init__(self, cu, sizes, launches=20000, iters=1000, pinned=False):
        self.cu, self.sizes, self.launches, self.iters = cu, sizes, launches, iters
        dev = _ok(cu.cuDeviceGet(0))
        if cu.__name__.startswith("cuda.bindings"):
            _ok(cu.cuCtxSetCurrent(_ok(cu.cuDevicePrimaryCtxRetain(dev))))
        else:
            _ok(cu.cuCtxCreate(0, dev))
        self.ctx = _ok(cu.cuCtxGetCurrent())
        mod = _ok(cu.cuModuleLoadData(PTX.read_bytes()))
        self.spin = _ok(cu.cuModuleGetFunction(mod, b"spin"))
        self.stencil = _ok(cu.cuModuleGetFunction(mod, b"stencil1d"))
        self._zero = ctypes.c_longlong(0)
        self._ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(self._zero))
        self.kp = ctypes.addressof(self._ptrs)  # a prepared void*[]: the cheapest way to pass parameters natively
        big = max(sizes)
        self.dptr = _ok(cu.cuMemAlloc(big))
        self.kinds = {"pageable": np.ones(big, dtype=np.uint8)}  # pageable memory of this process
        if pinned:
            hp = _ok(cu.cuMemHostAlloc(big, 0))
            self.kinds["pinned"] = np.ctypeslib.as_array((ctypes.c_uint8 * big).from_address(int(hp)))
        self.checksums: dict = {}

    def current(self) -> None:
        """Make this side's context current (the two sides alternate in one thread)."""
        if self.cu.__name__.startswith("cuda.bindings"):
            _ok(self.cu.cuCtxSetCurrent(self.ctx))

    def figures(self) -> list:
        """[(figure, one repetition -> seconds, best seconds -> figure value)]."""
        cu, spin, kp = self.cu, self.spin, self.kp
        out: list[tuple[str, Callable[[], float], Callable[[float], float]]] = []

        def queued(n=self.launches):
            t = time.perf_counter()
            for _ in range(n):
                cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0)
            _ok(cu.cuCtxSynchronize())
            return time.perf_counter() - t
        out.append(("queued_launch_us", queued, lambda t: t / self.launches * 1e6))

        def roundtrip(n=2000):
            t = time.perf_counter()
            for _ in range(n):
                cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0)
                cu.cuStreamSynchronize(0)
            return time.perf_counter() - t
        out.append(("launch_sync_us", roundtrip, lambda t: t / 2000 * 1e6))

        for kind, buf in self.kinds.items():
            for size in self.sizes:
                reps = max(2, min(20, (256 * MiB) // size))
                out.append((f"htod_{kind}_GBps_{size // MiB}M", self._htod(buf, size, reps),
                            _gb_per_s(size * reps)))
                out.append((f"dtoh_{kind}_GBps_{size // MiB}M", self._dtoh(buf, size, reps),
                            _gb_per_s(size * reps)))

        # The same iterative stencil at two sizes: 1M floats (each kernel a few µs of GPU time, so
        # the host's cost per launch and the copies out show), 16M floats (a realistic kernel
        # length, where a forwarded launch hides behind the one before it).
        for n, tag in ((1 << 20, "1M"), (1 << 24, "16M")):
            out.append((f"stencil_{tag}_e2e_s", self._stencil(n, tag), lambda t: t))
        return out

    def _htod(self, buf, size, reps):
        cu, dptr = self.cu, self.dptr

        def htod():
            t = time.perf_counter()
            for _ in range(reps):
                _ok(cu.cuMemcpyHtoD(dptr, buf.ctypes.data, size))
            _ok(cu.cuCtxSynchronize())  # counted until every copy has landed
            return time.perf_counter() - t
        return htod

    def _dtoh(self, buf, size, reps):
        cu, dptr = self.cu, self.dptr

        def dtoh():
            t = time.perf_counter()
            for _ in range(reps):
                _ok(cu.cuMemcpyDtoH(buf.ctypes.data, dptr, size))
            return time.perf_counter() - t
        return dtoh

    def _stencil(self, n, tag):
        cu, stencil, iters = self.cu, self.stencil, self.iters
        x = np.random.default_rng(0).random(n, dtype=np.float32)
        y = np.empty_like(x)

        def e2e():
            a, b = int(_ok(cu.cuMemAlloc(4 * n))), int(_ok(cu.cuMemAlloc(4 * n)))
            t = time.perf_counter()
            _ok(cu.cuMemcpyHtoD(a, x.ctypes.data, 4 * n))
            for i in range(iters):
                cu.cuLaunchKernel(stencil, n // 256, 1, 1, 256, 1, 1, 0, 0, ((a, b, n), (P, P, I32)), 0)
                a, b = b, a
                if i % 100 == 99:
                    _ok(cu.cuMemcpyDtoH(y.ctypes.data, a, 4 * n))  # data out along the way
            _ok(cu.cuCtxSynchronize())
            dt = time.perf_counter() - t
            _ok(cu.cuMemFree(a))
            _ok(cu.cuMemFree(b))
            self.checksums[f"stencil_{tag}_checksum"] = float(y.astype(np.float64).sum())
            return dt
        return e2e


def run_side_by_side(sides: dict, repeat: int = 5) -> dict:
    """{side: {figure: value}}: each figure warmed up on every side that has it, then `repeat`
    repetitions taken in turn on each side; the best repetition of each side counts."""
    plans = {name: {fig: (fn, value) for fig, fn, value in w.figures()} for name, w in sides.items()}
    order = list(dict.fromkeys(fig for plan in plans.values() for fig in plan))
    out: dict = {name: {} for name in sides}
    for figure in order:
        having = [name for name in sides if figure in plans[name]]
        best = {name: float("inf") for name in having}
        for rep in range(repeat + 1):
            for name in having:
                sides[name].current()
                t = plans[name][figure][0]()
                if rep:  # the first round is the warm-up
                    best[name] = min(best[name], t)
        for name in having:
            out[name][figure] = plans[name][figure][1](best[name])
    for name, w in sides.items():
        out[name].update(w.checksums)
    return out


def start_worker(tmp: str, region: int, backend: str = "cuda", env: dict | None = None):
    """A loopback worker (its socket in `tmp`, its region in /dev/shm), with this process's
    environment and `env`: (process, socket, region file)."""
    sock, shm = os.path.join(tmp, "bench.sock"), f"/dev/shm/kvmgpu-benchgpu-{os.getpid()}"
    log = open(os.path.join(tmp, "worker.log"), "w+")
    env = {**os.environ, **(env or {}), "PYTHONPATH": f"{ROOT / 'guest-agent'}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, "8G", sock, shm, f"{region // MiB}M", "bench",
                             "100", "share", backend], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(f"the worker did not start:\n{log.read()}")
        time.sleep(0.05)
    return proc, sock, shm


def stop_worker(proc, sock: str, shm: str) -> None:
    """Stop a worker `start_worker` started and remove its socket and region file."""
    proc.terminate()
    proc.wait(10)
    for path in (sock, shm):
        if os.path.exists(path):
            os.unlink(path)


def loopback_worker(region: int, env: dict | None = None):
    """A loopback worker of its own (`start_worker` in a new directory), with KVMGPU_SOCKET and
    KVMGPU_SHM set in this process's environment to it (where the guest driver's cuInit, here or
    in a child, finds it): (its process, `stop`). `stop()` stops it, removes its files and puts
    the two variables back as they were."""
    proc, sock, shm = start_worker(tempfile.mkdtemp(prefix="kvmgpu-benchgpu-"), region, env=env)
    names = ("KVMGPU_SOCKET", "KVMGPU_SHM")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(zip(names, (sock, shm)))

    def stop() -> None:
        stop_worker(proc, sock, shm)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return proc, stop


def run_guest(args: list, env: dict | None = None, region: int = 256 * MiB) -> None:
    """`python *args` as a guest process against a loopback worker of its own, both with this
    process's environment and `env`; the worker is stopped when the guest is done (the probes'
    way of measuring a fresh pair of processes)."""
    _, stop = loopback_worker(region, env)
    try:
        subprocess.run([sys.executable, *args], check=True, env={**os.environ, **(env or {})})
    finally:
        stop()


def in_turn(names: list, run, rounds: int) -> dict:
    """{name: [value of each round]}: `run(name)` for every name, the names in turn round by round
    (each round starting one name later, so a drift of the machine falls on all alike), after one
    round that is not kept (the warm-up). The probes' way of comparing ways in one process pair."""
    times: dict[str, list] = {name: [] for name in names}
    for r in range(rounds + 1):
        for name in names[r % len(names):] + names[:r % len(names)]:
            value = run(name)
            if r:
                times[name].append(value)
    return times


def report_turns(times: dict, unit: str, relative) -> None:
    """One line a way of `in_turn`'s figures: median, best, `relative(median, native median)`, and
    every round."""
    base = sorted(times["native"])[len(times["native"]) // 2]
    width = max(map(len, times))
    for name, ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        print(f"{name:{width}} median {med:6.2f} {unit}  best {min(ts):6.2f}  ({relative(med, base)})  "
              + " ".join(f"{t:.1f}" for t in ts))


TARGETS = {  # figure: (how forwarded compares to native, the limit)
    "queued_launch_us": ("ratio <=", 1.2),
    "launch_sync_us": ("ratio <=", 3.0),
    "stencil_1M_e2e_s": ("overhead % <=", 5.0),
    "stencil_16M_e2e_s": ("overhead % <=", 5.0),
}


def median_round(rounds: list) -> tuple[dict, dict, dict]:
    """From several rounds of `run_side_by_side`: (native, forwarded) with each figure taken from
    the round whose forwarded/native ratio is the median one, and {figure: ratio of each round}."""
    nat, fwd, spread = {}, {}, {}
    for key in rounds[0]["native"]:
        if key.endswith("_checksum") or key not in rounds[0]["forwarded"]:
            nat[key] = rounds[0]["native"][key]
            continue
        ratios = [(r["forwarded"][key] / r["native"][key] if r["native"][key] else float("nan"), i)
                  for i, r in enumerate(rounds)]
        _, mid = sorted(ratios)[len(ratios) // 2]
        nat[key], fwd[key] = rounds[mid]["native"][key], rounds[mid]["forwarded"][key]
        spread[key] = [ratio for ratio, _ in ratios]
    for key in rounds[0]["forwarded"]:
        fwd.setdefault(key, rounds[0]["forwarded"][key])
    return nat, fwd, spread


def table(native: dict, fwd: dict, spread: dict | None = None) -> str:
    rows = [f"{'figure':26} {'native':>9} {'forwarded':>9} {'ratio':>6}  target"
            + ("  [ratio in each round]" if spread else "")]
    for key in native:
        if key not in fwd or key.endswith("_checksum"):
            continue
        n, f = native[key], fwd[key]
        ratio = f / n if n else float("nan")
        target = ""
        if key in TARGETS:
            how, lim = TARGETS[key]
            val = (ratio - 1) * 100 if how.startswith("overhead") else ratio
            target = f"{how} {lim}: {'PASS' if val <= lim else 'MISS'} ({val:.2f})"
        elif key.startswith("htod_pageable"):
            pinned = native.get(key.replace("pageable", "pinned"))
            target = f">= native pageable: {'PASS' if f >= n else 'MISS'}"
            if pinned:
                target += f"; native pinned {pinned:.1f}"
        if spread and key in spread:
            target += "  [" + " ".join(f"{r:.2f}" for r in spread[key]) + "]"
        rows.append(f"{key:26} {n:9.3f} {f:9.3f} {ratio:6.2f}  {target}")
    return "\n".join(rows)


def probe() -> dict:
    """Where a forwarded round trip goes, piece by piece (run in its own process: it owns the
    primary context): the cuda backend alone (ctypes and cuda-bindings launch), and a bare
    unix-socket echo between two processes, blocking and with a short busy-poll."""
    import socket
    import struct

    from kvmgpu.backend.cuda import CudaBackend
    out: dict = {}
    b = CudaBackend(0)
    f, _ = b.module_get_function(b.module_load(PTX.read_bytes()), "spin")
    args = struct.pack("<q", 0)
    for mode in ("ctypes", "extra"):
        b.launch_mode = mode

        def queued(n=20000):
            t = time.perf_counter()
            for _ in range(n):
                b.launch(f, (1, 1, 1), (1, 1, 1), 0, None, args)
            b.synchronize()
            return (time.perf_counter() - t) / n * 1e6

        def sync(n=2000):
            t = time.perf_counter()
            for _ in range(n):
                b.launch(f, (1, 1, 1), (1, 1, 1), 0, None, args)
                b.stream_synchronize(None)
            return (time.perf_counter() - t) / n * 1e6
        queued()
        out[f"backend_{mode}_queued_us"] = _best(queued)
        out[f"backend_{mode}_sync_us"] = _best(sync)
    b.close()
    for poll in (0, 50):
        a, c = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            a.close()
            while True:
                d = None
                end = time.perf_counter() + poll / 1e6
                while poll and d is None and time.perf_counter() < end:
                    try:
                        d = c.recv(65536, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        pass
                if d is None:
                    d = c.recv(65536)
                if not d:
                    os._exit(0)
                c.sendall(d)
        c.close()

        def echo(n=5000, a=a, poll=poll):
            t = time.perf_counter()
            for _ in range(n):
                a.sendall(b"x" * 40)
                d = None
                end = time.perf_counter() + poll / 1e6
                while poll and d is None and time.perf_counter() < end:
                    try:
                        d = a.recv(65536, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        pass
                if d is None:
                    a.recv(65536)
            return (time.perf_counter() - t) / n * 1e6
        out[f"echo_poll{poll}_us"] = _best(echo)
        a.close()
        os.waitpid(pid, 0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--probe", action="store_true", help="only the round-trip pieces (backend, echo)")
    ap.add_argument("--max-size", default=1024, type=int, help="largest copy in MiB")
    ap.add_argument("--iters", default=1000, type=int, help="stencil launches")
    ap.add_argument("--repeat", default=5, type=int, help="repetitions of each figure on each side, taken in turn")
    ap.add_argument("--rounds", default=3, type=int,
                    help="rounds of all figures; the table shows the round with the median ratio")
    a = ap.parse_args(argv)
    if a.probe:
        r = probe()
        print(json.dumps(r, indent=1))
        if a.json:
            Path(a.json).write_text(json.dumps(r, indent=1))
        return 0
    sizes = [s * MiB for s in (1, 16, 64, 256, 1024) if s <= a.max_size]
    shm_free = shutil.disk_usage("/dev/shm").free
    while sizes and max(sizes) + 64 * MiB > shm_free:
        sizes.pop()
    region = max(sizes) + 64 * MiB

    from cuda.bindings import driver as native
    _ok(native.cuInit(0))
    info = {"gpu": _ok(native.cuDeviceGetName(256, 0)).split(b"\0")[0].decode(),
            "env": {k: v for k, v in os.environ.items() if k.startswith("KVMGPU_")},
            "driver": _ok(native.cuDriverGetVersion()), "date": time.strftime("%Y-%m-%d"),
            "python": sys.version.split()[0], "command": "python -m kvmgpu.benchgpu " + " ".join(argv or sys.argv[1:])}
    native_side = Workloads(native, sizes, iters=a.iters, pinned=True)

    _, stop = loopback_worker(region)
    try:
        from kvmgpu_guest import driver as fwd_driver
        _ok(fwd_driver.cuInit(0))
        forwarded_side = Workloads(fwd_driver, sizes, iters=a.iters)
        rounds = [run_side_by_side({"native": native_side, "forwarded": forwarded_side}, a.repeat)
                  for _ in range(a.rounds)]
        nat, fwd, spread = median_round(rounds)
    finally:
        stop()
    text = table(nat, fwd, spread if a.rounds > 1 else None)
    for key in (k for k in nat if k.endswith("_checksum")):  # the forwarded run computed the same
        same = nat[key] == fwd.get(key)
        info[key.replace("_checksum", "_same_result")] = same
        text += f"\n{key.replace('_checksum', '')}: forwarded result {'==' if same else '!='} native result"
    print(json.dumps(info))
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "native": nat, "forwarded": fwd, "ratios": spread,
                                            "rounds": rounds, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

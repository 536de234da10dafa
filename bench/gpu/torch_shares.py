"""Two VMs training on one GPU at compute shares 30 and 70 (issue 22): does each get its share of
the GPU's time within +-3 percentage points over 1 s windows, also when the 30 % VM replays a CUDA
graph of its step (one call that is metered as the GPU time it takes)? On the GPU machine:

    python3 bench/gpu/torch_shares.py [--out DIR] [--cases eager,graph] [--seconds 8]
        [--workload torch|spin] [--width 4096 --depth 4 --batch 4096] [--backend cuda|sim]

Two loopback workers (kvmgpu.worker.server.serve, cuda backend, compute 30 and 70, mode share,
one compute board: KVMGPU_COMPUTE_DIR) and one guest process each, the GPU hidden from it
(bench/gpu/loopback_vms.py), libcuda.so.1 first on its loader's path. The guest trains an MLP of
bf16 linear layers (WIDTH x WIDTH, DEPTH of them, batch BATCH, SGD): GPU-bound, GEMMs of a few
hundred microseconds, ~3 ms of GPU time a step on an H100 at the defaults. Cases: `eager`, both
VMs step eagerly; `graph`, the 30 % VM replays a CUDA graph captured of its whole step (forward,
backward, optimizer: PyTorch's whole-network capture) while the 70 % VM steps eagerly.
`--workload spin` is the stand-in with no PyTorch: a step is LAUNCHES `spin` kernels of
SPIN_US each (tests/kernels/kernels.ptx) through the driver API of the library (ctypes), in the
graph case captured from a stream and replayed with cuGraphLaunch; it runs on the sim backend too
(`--backend sim` tries the harness without a GPU: the sim has no compute gate, so its shares are
whatever the two processes get, and the run is not judged).

The measure, independent of the gate: each guest first runs its step alone (the other VM idle; share
mode is work-conserving, so it has the whole GPU) and measures the GPU time of one step with CUDA
events around it (median over CALIBRATE seconds; the events are real GPU timestamps, taken through
the library). Then both start together (a shared monotonic start time) and run for SECONDS, each
step followed by a synchronise (--steps-per-sync N: a step of the measure is N training steps and
one synchronise), recording when it was issued and when it was seen complete. A VM's GPU time in a 1
s window is its steps' calibrated GPU time, each step's spread evenly over [issued, complete] (a
step's GPU time is somewhere in that interval; spreading bounds the error at each window edge to a
fraction of one step, where counting whole steps would make it one step). Its achieved share is its
GPU time over both VMs' in that window; the first and the last second are left out (start-up, stop).
The sum of both in a window (`gpu_busy`, ~1.0 when the two keep the GPU busy and their steps cost
together what they cost alone) shows whether the calibration holds under sharing. Beside it, the GPU
seconds each worker's gate charged over the whole run (their stats files, read while both are idle
before and after), which is the gate's own view, not the measure. (The stats files are rewritten at
most once a second, at no fixed phase: too coarse for 1 s windows.)

Prints each window's shares and the worst error in pp against +-3 pp, writes DIR/torch_shares.json;
exits 1 when a run failed or (cuda backend) a case missed the target.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback_vms import ROOT, LoopbackVM, begin  # noqa: E402

PTX = ROOT / "tests" / "kernels" / "kernels.ptx"
TOLERANCE_PP = 3.0


# --- the guest: one VM's training loop ---------------------------------------------------------------

class SpinStep:
    """The stand-in step on the driver API of whatever libcuda.so.1 the loader finds: LAUNCHES
    `spin` kernels, or (graph) one cuGraphLaunch of them captured from a stream."""

    def __init__(self, a, graph: bool):
        import ctypes as c
        self.c = c
        cu = self.cu = c.CDLL("libcuda.so.1")
        P = c.c_void_p
        cu.cuLaunchKernel.argtypes = [P, c.c_uint, c.c_uint, c.c_uint, c.c_uint, c.c_uint, c.c_uint, c.c_uint, P,
                                      P, P]
        cu.cuEventRecord.argtypes = cu.cuGraphLaunch.argtypes = [P, P]
        cu.cuStreamBeginCapture_v2.argtypes = [P, c.c_int]
        self.ok(cu.cuInit(0))
        dev, ctx, mod, self.f = c.c_int(), P(), P(), P()
        self.ok(cu.cuDeviceGet(c.byref(dev), 0))
        self.ok(cu.cuDevicePrimaryCtxRetain(c.byref(ctx), dev))
        self.ok(cu.cuCtxSetCurrent(ctx))
        self.ok(cu.cuModuleLoadData(c.byref(mod), c.c_char_p(PTX.read_bytes() + b"\0")))
        self.ok(cu.cuModuleGetFunction(c.byref(self.f), mod, b"spin"))
        self.ns = c.c_longlong(int(a.spin_us * 1000))
        self.params = (P * 1)(c.cast(c.byref(self.ns), P))
        self.launches, self.stream, self.exec = a.launches, P(), None
        self.name = f"{a.launches} x spin({a.spin_us} us){' as a graph' if graph else ''}"
        if graph:
            self.ok(cu.cuStreamCreate(c.byref(self.stream), 0))
            self.ok(cu.cuStreamBeginCapture_v2(self.stream, 0))  # CU_STREAM_CAPTURE_MODE_GLOBAL
            self._launch_all()
            g, self.exec = P(), P()
            self.ok(cu.cuStreamEndCapture(self.stream, c.byref(g)))
            self.ok(cu.cuGraphInstantiateWithFlags(c.byref(self.exec), g, c.c_ulonglong(0)))

    def ok(self, rc: int) -> None:
        if rc:
            raise RuntimeError(f"CUDA error {rc}")

    def _launch_all(self) -> None:
        for _ in range(self.launches):
            self.ok(self.cu.cuLaunchKernel(self.f, 1, 1, 1, 1, 1, 1, 0, self.stream, self.params, None))

    def step(self) -> None:
        if self.exec is not None:
            self.ok(self.cu.cuGraphLaunch(self.exec, self.stream))
        else:
            self._launch_all()

    def sync(self) -> None:
        self.ok(self.cu.cuCtxSynchronize())

    def event(self):
        e = self.c.c_void_p()
        self.ok(self.cu.cuEventCreate(self.c.byref(e), 0))
        self.ok(self.cu.cuEventRecord(e, self.stream))
        return e

    def elapsed(self, e0, e1) -> float:
        ms = self.c.c_float()
        self.ok(self.cu.cuEventElapsedTime(self.c.byref(ms), e0, e1))
        for e in (e0, e1):
            self.cu.cuEventDestroy_v2(e)
        return ms.value / 1e3


class TorchStep:
    """A training step of an MLP of bf16 linear layers; (graph) the whole step captured once and
    replayed (PyTorch's whole-network capture: warm-up on a side stream, then torch.cuda.graph)."""

    def __init__(self, a, graph: bool, device: str = "cuda"):
        import torch
        self.torch, self.device = torch, device
        torch.manual_seed(0)
        layers = []
        for _ in range(a.depth):
            layers += [torch.nn.Linear(a.width, a.width, bias=False), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers).to(device=device, dtype=torch.bfloat16)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(a.batch, a.width, device=device, dtype=torch.bfloat16)
        self.y = torch.randn(a.batch, a.width, device=device, dtype=torch.bfloat16)
        self.name = (f"MLP {a.depth} x {a.width}^2 bf16, batch {a.batch}, SGD"
                     f"{', a CUDA graph of the step' if graph else ', eager'}")
        self.graph = None
        if graph:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    self._train()
            torch.cuda.current_stream().wait_stream(s)
            self.graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                self._train()

    def _train(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.mse_loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._train()

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def event(self):
        if self.device != "cuda":  # (CPU: only to try the code without a GPU)
            return time.perf_counter()
        e = self.torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def elapsed(self, e0, e1) -> float:
        return e1 - e0 if self.device != "cuda" else e0.elapsed_time(e1) / 1e3


def calibrate(w, seconds: float) -> dict:
    """The step alone: its GPU time between two events (median), and its wall time with the sync."""
    gpu, wall = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end or len(gpu) < 5:
        t = time.monotonic()
        e0 = w.event()
        w.step()
        e1 = w.event()
        w.sync()
        wall.append(time.monotonic() - t)
        gpu.append(w.elapsed(e0, e1))
    return {"step_gpu_s": statistics.median(gpu), "step_wall_s": statistics.median(wall), "steps": len(gpu),
            "step_gpu_s_p10_p90": [statistics.quantiles(gpu, n=10)[0], statistics.quantiles(gpu, n=10)[-1]]}


def run_steps(w, start: float, seconds: float) -> list:
    """Steps from START (monotonic) for SECONDS: [issued, seen complete] of each."""
    while time.monotonic() < start:
        time.sleep(min(0.001, max(0.0, start - time.monotonic())))
    marks = []
    while time.monotonic() < start + seconds:
        t = time.monotonic()
        w.step()
        w.sync()
        marks.append((t, time.monotonic()))
    return marks


def guest(a) -> int:
    """Set up, say READY, then answer the orchestrator's lines: `calibrate S`, `run START S`, `quit`."""
    if a.workload == "spin":
        w = SpinStep(a, a.graph)
    else:
        w = TorchStep(a, a.graph, a.device)
    for _ in range(3):  # warm-up: cuBLAS's handles and workspaces, the first launches
        w.step()
    w.sync()
    if a.steps_per_sync > 1:  # a "step" of the measure is then that many, one synchronise after them
        one, w.name = w.step, f"{a.steps_per_sync} x ({w.name})"

        def many():
            for _ in range(a.steps_per_sync):
                one()
        w.step = many
    print("READY " + json.dumps({"step": w.name}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["calibrate"]:
            print("CALIBRATED " + json.dumps(calibrate(w, float(cmd[1]))), flush=True)
        elif cmd[:1] == ["run"]:
            print("RESULT " + json.dumps({"marks": run_steps(w, float(cmd[1]), float(cmd[2]))}), flush=True)
        else:
            break
    return 0


# --- the orchestrator -------------------------------------------------------------------------------

class Guest:
    """A guest process and its protocol lines (read by a thread, so that waits can time out)."""

    def __init__(self, cmd: list[str], env: dict, log: Path):
        self.log = log
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(log, "w"), text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                tail = self.log.read_text()[-3000:]
                raise RuntimeError(f"the guest ({self.log.name}) gave no {word}: exit {self.proc.poll()}\n{tail}")
            if line.startswith(word + " "):
                return json.loads(line[len(word) + 1:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def gpu_time_in(marks: list, step_gpu: float, lo: float, hi: float) -> float:
    """The GPU time of the steps in [lo, hi): each step's spread evenly over [issued, complete]."""
    total = 0.0
    for t0, t1 in marks:
        if t1 <= lo or t0 >= hi:
            continue
        total += step_gpu * (min(t1, hi) - max(t0, lo)) / max(t1 - t0, 1e-9)
    return total


def shares(results: list[dict], steps: list[float], targets: list[float], start: float, seconds: float) -> dict:
    windows = []
    for k in range(1, int(seconds) - 1):  # whole seconds, the first and the last left out
        gpu = [gpu_time_in(r["marks"], g, start + k, start + k + 1) for r, g in zip(results, steps)]
        busy = sum(gpu)
        windows.append({"gpu_s": [round(x, 5) for x in gpu], "gpu_busy": round(busy, 4),
                        "share": [round(x / busy, 4) if busy else None for x in gpu]})
    errors = [abs(w["share"][i] - t) * 100 for w in windows for i, t in enumerate(targets) if w["share"][i] is not None]
    whole = [len(r["marks"]) * g for r, g in zip(results, steps)]
    return {"windows": windows, "worst_error_pp": round(max(errors), 2) if errors else None,
            "whole_run_share": [round(x / sum(whole), 4) if sum(whole) else None for x in whole]}


def charged(vms: list[LoopbackVM]) -> list[float]:
    """The GPU seconds each gate charged so far (the guests idle: the charges are final)."""
    return [float(vm.fresh_stats().get("compute", {}).get("gpu_seconds", 0.0)) for vm in vms]


def run_case(case: str, a, out: Path, lib: Path, hide: list[str]) -> dict:
    percents = [int(p) for p in a.percents.split(",")]
    targets = [p / sum(percents) for p in percents]
    board = Path(tempfile.mkdtemp(prefix="kvmgpu-shares-board."))  # this case's workers' one GPU
    vms, guests = [], []
    try:
        for i, p in enumerate(percents):
            vms.append(LoopbackVM(out, f"{case}-vm{i}-{p}", lib, backend=a.backend, compute=p, mode="share",
                                  compute_dir=board))
        for i, vm in enumerate(vms):
            graph = case == "graph" and i == a.graph_vm
            cmd = hide + [sys.executable, str(Path(__file__).resolve()), "guest", "--workload", a.workload,
                          "--width", str(a.width), "--depth", str(a.depth), "--batch", str(a.batch),
                          "--spin-us", str(a.spin_us), "--launches", str(a.launches),
                          "--steps-per-sync", str(a.steps_per_sync)] + (["--graph"] if graph else [])
            guests.append(Guest(cmd, vm.guest_env(), out / f"{vm.name}.guest.log"))
        ready = [g.expect("READY", a.setup_timeout) for g in guests]
        calib = []
        for g in guests:  # one at a time: the step alone on the GPU
            g.send(f"calibrate {a.calibrate}")
            calib.append(g.expect("CALIBRATED", a.calibrate + 120))
        before = charged(vms)  # (both idle)
        start = time.monotonic() + 2.0
        for g in guests:
            g.send(f"run {start} {a.seconds}")
        results = [g.expect("RESULT", a.seconds + 120) for g in guests]
        after = charged(vms)
    finally:
        for g in guests:
            g.stop()
        for vm in vms:
            vm.stop()
    steps = [c["step_gpu_s"] for c in calib]
    got = shares(results, steps, targets, start, a.seconds)
    spent = [x - y for x, y in zip(after, before)]
    return {"case": case, "percents": percents, "targets": targets, "steps": [r["step"] for r in ready],
            "calibration": calib, **got, "steps_done": [len(r["marks"]) for r in results],
            "charged_s": [round(x, 4) for x in spent],
            "charged_share": [round(x / sum(spent), 4) if sum(spent) > 0 else None for x in spent]}


def print_case(r: dict, judged: bool) -> bool:
    print(f"== {r['case']}: " + "; ".join(f"VM {p} %: {s}" for p, s in zip(r["percents"], r["steps"])))
    for p, c in zip(r["percents"], r["calibration"]):
        print(f"   alone, VM {p} %: {c['step_gpu_s'] * 1e3:.3f} ms GPU a step, {c['step_wall_s'] * 1e3:.3f} ms "
              f"with its synchronise ({c['steps']} steps)")
    print("   window  " + "  ".join(f"VM {p:>2} %" for p in r["percents"]) + "  gpu_busy")
    for k, w in enumerate(r["windows"], 1):
        print(f"   {k:>6}  " + "  ".join(f"{100 * s:7.2f}" if s is not None else "      -" for s in w["share"])
              + f"  {w['gpu_busy']:.3f}")
    passed = r["worst_error_pp"] is not None and r["worst_error_pp"] <= TOLERANCE_PP
    verdict = ("PASS" if passed else "MISS") if judged else "not judged (no compute gate on this backend)"
    print(f"   worst error {r['worst_error_pp']} pp (target <= {TOLERANCE_PP}) {verdict}; whole run "
          f"{r['whole_run_share']}, charged by the gates {r['charged_share']} ({r['charged_s']} s)")
    return passed or not judged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", choices=["guest"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cases", default="eager,graph", help="eager, graph (the --graph-vm replays a CUDA graph)")
    ap.add_argument("--percents", default="30,70")
    ap.add_argument("--graph-vm", type=int, default=0, help="which VM replays the graph (0: the first of --percents)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--calibrate", type=float, default=2.0, help="seconds of each VM's step alone")
    ap.add_argument("--setup-timeout", type=float, default=300.0)
    ap.add_argument("--workload", choices=["torch", "spin"], default="torch")
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--spin-us", type=float, default=200.0)
    ap.add_argument("--launches", type=int, default=8)
    ap.add_argument("--steps-per-sync", type=int, default=1, help="training steps between synchronises")
    ap.add_argument("--backend", choices=["cuda", "sim"], default="cuda")
    ap.add_argument("--graph", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # (guest; cpu: to try the code)
    a = ap.parse_args()
    if a.mode == "guest":
        return guest(a)
    cases = [c for c in a.cases.split(",") if c]
    bad = [c for c in cases if c not in ("eager", "graph")]
    if bad or not cases:
        ap.error(f"unknown case {', '.join(bad) or '(none)'}: the cases are eager and graph")
    try:
        percents = [int(p) for p in a.percents.split(",")]
    except ValueError:
        percents = []
    if len(percents) < 2 or not all(1 <= p <= 100 for p in percents):
        ap.error(f"--percents must be two or more compute percents from 1 to 100, not '{a.percents}'")
    if not 0 <= a.graph_vm < len(percents):
        ap.error(f"--graph-vm must name one of the {len(percents)} VMs of --percents (0 to {len(percents) - 1})")
    if a.steps_per_sync < 1 or a.launches < 1 or min(a.width, a.depth, a.batch) < 1:
        ap.error("--steps-per-sync, --launches, --width, --depth and --batch must be at least 1")
    if a.seconds < 3:
        ap.error("--seconds must be at least 3 (the first and the last second are left out)")
    out, lib, hide, gpu = begin(a.out, "kvmgpu-torch-shares.", a.backend)
    report, ok = {"gpu": gpu, "backend": a.backend, "workload": a.workload, "hide": hide, "cases": []}, True
    for case in cases:
        try:
            r = run_case(case, a, out, lib, hide)
        except RuntimeError as e:
            print(f"== {case}: FAILED: {e}")
            report["cases"].append({"case": case, "error": str(e)})
            ok = False
            continue
        report["cases"].append(r)
        ok &= print_case(r, judged=a.backend == "cuda")
    (out / "torch_shares.json").write_text(json.dumps(report, indent=1))
    verdict = "every case within" if ok else "NOT every case within"
    if a.backend != "cuda":
        verdict = ("the harness ran" if ok else "the harness FAILED") + "; shares not judged against"
    print(f"== {verdict} {TOLERANCE_PP} pp; {out / 'torch_shares.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

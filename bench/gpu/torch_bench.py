"""PyTorch forwarded against native, side by side (issue 22's benchmarks): each measurement runs in a
native process, then in a guest process (the GPU hidden, the guest library first on the path,
against the loopback worker named by KVMGPU_SOCKET and KVMGPU_SHM), one after the other, and the
ratios are printed and written as JSON. Run by bench/gpu/torch_gpu.sh, which builds the library and
starts the worker; by hand, with such a worker running:

    KVMGPU_SOCKET=... KVMGPU_SHM=... python3 bench/gpu/torch_bench.py --lib DIR [--only a,b] [--seconds 6]
        [--warmup 2] [--rounds 1] [--json FILE] [--out DIR] [--device cpu --tiny]

The measurements (--only picks; targets forwarded/native, from issue 22):
  resnet50    ResNet-50 training, batch 128, 224x224, bf16 autocast, channels_last, SGD: images/s (>= 0.97)
  gpt         GPT-2 small (12 layers, d_model 768, 12 heads, seq 1024, batch 8) training, bf16
              autocast, fused AdamW: tokens/s (>= 0.97)
  mlp_eager   a small MLP's training step, batch 32, eager (launch-bound): steps/s (>= 0.8)
  mlp_graph   the same step captured as one CUDA graph and replayed: steps/s (>= 0.97)
  latency     inference of a small ResNet, batch 1: input copied in, forward, logits copied out,
              p50 and p99 in µs (no target: reported against native)
Each: a warm-up of --warmup seconds (at least a few steps; cuDNN's autotuning happens there), then
about --seconds of steps timed from one synchronisation to the next. `--device cpu --tiny` tries
the plumbing without a GPU (both processes on the CPU: the ratios mean nothing)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_GPU = Path(__file__).with_name("without_gpu.sh")
sys.path.insert(0, str(ROOT / "tests" / "guest" / "programs"))
from torch_proof import gpt_step, make_gpt, make_resnet

# name -> (figure, unit, better when, target ratio forwarded/native or None)
FIGURES = {
    "resnet50": [("resnet50_train", "images/s", "higher", 0.97)],
    "gpt": [("gpt_train", "tokens/s", "higher", 0.97)],
    "mlp_eager": [("mlp_eager", "steps/s", "higher", 0.8)],
    "mlp_graph": [("mlp_graph", "steps/s", "higher", 0.97)],
    "latency": [("latency_p50", "us", "lower", None), ("latency_p99", "us", "lower", None)],
}


# --- the measurements (in the child process) ---

def resnet50(torch, tiny):
    """ResNet-50 (He et al. 2015, v1.5: the stride on the 3x3): bottleneck stages of 3, 4, 6, 3 blocks."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            cout = mid * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers: list = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (mid, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for b in range(blocks if not tiny else 1):
            layers.append(Bottleneck(cin, mid, 2 if i > 0 and b == 0 else 1))
            cin = mid * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    return nn.Sequential(*layers)


def bench_resnet50(torch, dev, tiny, seconds, warmup):
    torch.backends.cudnn.benchmark = True
    batch, size = (4, 64) if tiny else (128, 224)
    model = resnet50(torch, tiny).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"resnet50_train": batch * rate(torch, dev, step, seconds, warmup)}


def bench_gpt(torch, dev, tiny, seconds, warmup):
    batch, seq = (2, 32) if tiny else (8, 1024)
    model = make_gpt(torch, layers=2 if tiny else 12, vocab=1000 if tiny else 50257, seq=seq).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    idx = torch.randint(0, model.tok.num_embeddings, (batch, seq + 1), device=dev)
    return {"gpt_train": batch * seq * rate(torch, dev, lambda: gpt_step(torch, model, opt, idx, dev), seconds, warmup)}


def mlp(torch, dev):
    """A small MLP (4 layers of 512) and its SGD training step on batch 32: ~40 small kernels a step."""
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512),
                          nn.ReLU(), nn.Linear(512, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(32, 512, device=dev), torch.randint(0, 10, (32,), device=dev)

    def step():
        opt.zero_grad(set_to_none=False)  # (in place: what a captured graph can replay)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def bench_mlp_eager(torch, dev, tiny, seconds, warmup):
    return {"mlp_eager": rate(torch, dev, mlp(torch, dev), seconds, warmup)}


def bench_mlp_graph(torch, dev, tiny, seconds, warmup):
    step = mlp(torch, dev)
    if dev != "cuda":  # (no graphs on the CPU: the plumbing only)
        return {"mlp_graph": rate(torch, dev, step, seconds, warmup)}
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up off the capture: the optimizer's state, cuBLAS's handle
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return {"mlp_graph": rate(torch, dev, graph.replay, seconds, warmup)}


def bench_latency(torch, dev, tiny, seconds, warmup):
    torch.manual_seed(0)
    model = make_resnet(torch).to(dev).eval()
    image = torch.randn(1, 3, 32, 32).pin_memory() if dev == "cuda" else torch.randn(1, 3, 32, 32)

    def request():
        with torch.inference_mode():
            return model(image.to(dev, non_blocking=True)).cpu()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < warmup or len(times) < 10:
        t = time.perf_counter()
        request()
        times.append(time.perf_counter() - t)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 100:
        t = time.perf_counter()
        request()
        times.append(time.perf_counter() - t)
    times.sort()
    return {"latency_p50": times[len(times) // 2] * 1e6, "latency_p99": times[int(len(times) * 0.99)] * 1e6,
            "requests": len(times)}


def rate(torch, dev, step, seconds, warmup):
    """Steps per second: warm up for `warmup` s (at least 3 steps), find how many steps take ~0.2 s,
    then time about `seconds` of steps between two synchronisations."""
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < warmup:
        step()
        sync()
        n += 1
    k = 1
    while True:
        t = time.perf_counter()
        for _ in range(k):
            step()
        sync()
        took = time.perf_counter() - t
        if took >= 0.2:
            break
        k *= 2
    n = max(3, int(seconds * k / took))
    t = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return n / (time.perf_counter() - t)


BENCHES = {"resnet50": bench_resnet50, "gpt": bench_gpt, "mlp_eager": bench_mlp_eager, "mlp_graph": bench_mlp_graph,
           "latency": bench_latency}


def child(args) -> int:
    import torch
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("FAIL no CUDA device (torch.cuda.is_available() is False)", flush=True)
        return 1
    figures = BENCHES[args.child](torch, dev, args.tiny, args.seconds, args.warmup)
    name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    print("RESULT " + json.dumps({"device": name, **figures}), flush=True)
    return 0


# --- side by side (the parent) ---

def hide_gpu() -> list[str]:
    """The command prefix that runs a program without the GPU (as in a VM): as bench/gpu/libcuda_gpu.sh."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-m", str(WITHOUT_GPU)]
    return ["env", "CUDA_VISIBLE_DEVICES="]


def run_child(cmd: list[str], env: dict, log: Path, timeout: float) -> dict | None:
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        text = "".join(s.decode(errors="replace") if isinstance(s, bytes) else s for s in (e.stdout, e.stderr) if s)
        text, rc = f"{text}\n(killed after {timeout:.0f} s)", "timeout"
    log.write_text(text)
    result = next((line[7:] for line in reversed(text.splitlines()) if line.startswith("RESULT ")), None)
    if rc != 0 or result is None:
        print(f"  {log.name}: exit {rc}: {text.strip()[-600:]}")
        return None
    return json.loads(result)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated, of {','.join(BENCHES)}")
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement (default 6)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per measurement (default 2)")
    ap.add_argument("--rounds", type=int, default=1, help="native/forwarded pairs per measurement (median)")
    ap.add_argument("--lib", type=Path, help="the guest library's directory (libcuda.so.1, libnvidia-ml.so.1)")
    ap.add_argument("--out", type=Path, help="the children's logs (default: a new temporary directory)")
    ap.add_argument("--json", type=Path, help="the results (default: OUT/torch_bench.json)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="small sizes (for --device cpu)")
    ap.add_argument("--child", choices=list(BENCHES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    names = args.only.split(",")
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"no measurement {', '.join(unknown)} (there are {', '.join(BENCHES)})")
    missing = [v for v in ("KVMGPU_SOCKET", "KVMGPU_SHM") if not os.environ.get(v)]
    if missing or not args.lib or not (args.lib / "libcuda.so.1").exists():
        ap.error(f"the forwarded side needs a loopback worker ({' and '.join(missing) or 'KVMGPU_SOCKET'} unset) and "
                 "--lib naming the built guest library (guest-agent/libcuda/build.py DIR): bench/gpu/torch_gpu.sh "
                 "sets up both")
    out = args.out or Path(tempfile.mkdtemp(prefix="kvmgpu-torch-bench."))
    out.mkdir(parents=True, exist_ok=True)
    lib = str(args.lib.resolve())
    native_env = {k: v for k, v in os.environ.items() if not k.startswith("KVMGPU_")}
    guest_env = dict(os.environ, LD_LIBRARY_PATH=":".join(filter(None, [lib, os.environ.get("LD_LIBRARY_PATH")])),
                     TRITON_LIBCUDA_PATH=lib)
    hide = hide_gpu()
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else "no GPU"
    print(f"== {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {gpu}; the guest side: "
          f"{shlex.join(hide)}, {lib}; logs in {out}", flush=True)
    timeout = 120 + 10 * (args.seconds + args.warmup)
    results: dict[str, list[tuple[dict, dict]]] = {}
    failed = False
    for name in names:
        for r in range(1, args.rounds + 1):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--device", args.device,
                   "--seconds", str(args.seconds), "--warmup", str(args.warmup)] + (["--tiny"] if args.tiny else [])
            t = time.perf_counter()
            native = run_child(cmd, native_env, out / f"native_{name}_{r}.txt", timeout)
            forwarded = run_child(hide + cmd, guest_env, out / f"forwarded_{name}_{r}.txt", timeout)
            failed |= native is None or forwarded is None
            if native and forwarded:
                results.setdefault(name, []).append((native, forwarded))
            print(f"  {name} round {r}: native {'ok' if native else 'FAILED'}, forwarded "
                  f"{'ok' if forwarded else 'FAILED'} ({time.perf_counter() - t:.0f} s)", flush=True)
    rows, met = [], True
    for name, pairs in results.items():
        for figure, unit, better, target in FIGURES[name]:
            native_value = statistics.median(n[figure] for n, _ in pairs)
            forwarded_value = statistics.median(f[figure] for _, f in pairs)
            ratio = forwarded_value / native_value
            passed = None if target is None else ratio >= target
            met &= passed is not False
            rows.append({"figure": figure, "unit": unit, "native": native_value, "forwarded": forwarded_value,
                         "ratio": ratio, "better": better, "target": target and f">= {target}", "pass": passed,
                         "ratios": [f[figure] / n[figure] for n, f in pairs],
                         "devices": [pairs[0][0]["device"], pairs[0][1]["device"]]})
    print(f"{'figure':16} {'unit':9} {'native':>10} {'forwarded':>10} {'ratio':>6}  target")
    for row in rows:
        verdict = "" if row["pass"] is None else ("PASS" if row["pass"] else "MISS")
        print(f"{row['figure']:16} {row['unit']:9} {row['native']:10.1f} {row['forwarded']:10.1f} {row['ratio']:6.3f}  "
              f"{row['target'] or '(' + row['better'] + ' is better)'} {verdict}")
    json_path = args.json or out / "torch_bench.json"
    json.dump({"gpu": gpu, "device": args.device, "seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds,
               "rows": rows, "failed": failed}, open(json_path, "w"), indent=1)
    print(f"== {'every target met' if met and not failed else 'targets missed' if not failed else 'a run failed'} "
          f"(ratio: forwarded/native; {json_path})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 22's proof: PyTorch training and graphs give the native run's results when forwarded. Seeded
checks, each one line, run by bench/gpu/torch_gpu.sh natively and as a guest (GPU hidden, the
guest library first on the path), then compared:

    python3 torch_proof.py [--device cuda|cpu] [--tiny] [--only resnet,gpt,...] > native.txt
    python3 torch_proof.py --compare native.txt forwarded.txt     # exit 1 when a value is off

The checks: a small ResNet (BatchNorm, cuDNN convolutions) trained with SGD; a GPT-2-small-sized
transformer (d_model 768, 12 heads, a few layers) trained with fused AdamW under bf16 autocast;
`torch.compile` (inductor, Triton kernels) forward and backward; a training step captured as a CUDA
graph and replayed. Each prints `OK <name> key=value ...` (full precision) or `FAIL <name> <error>`,
and `time <name> <ms>`; then DONE. `--device cpu --tiny` runs them without a GPU (what the plumbing
can be tried with)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback

# Relative tolerance of each check's values, forwarded against native (|f - n| <= rtol * max(|f|, |n|)
# + ATOL). Both runs are seeded, on the same GPU, with the same libraries, deterministic algorithms
# and no TF32, so they would be bitwise equal if both picked the same kernels; what may still
# differ is the choice itself: cuBLAS/cuDNN heuristics see the vGPU's memory (the quota) instead of
# the GPU's, may pick another algorithm or workspace (another split-K, another reduction order),
# and that changes the rounding of every product. In fp32 one such change is ~1e-6 relative per
# value; a few optimizer steps on small learning rates keep it below ~1e-5, so 1e-3 leaves two
# orders of margin and still fails any wrong kernel, lost copy or skipped step (those move a loss
# by percents). bf16 rounds at ~4e-3 relative per value: a changed reduction order can flip
# roundings, averaged over thousands of tokens in the loss; 2e-2 there. Triton's kernels are
# the same code both ways (inductor's choices depend on the device's properties, which the guest
# reports as the GPU's), the matmuls beside them are cuBLAS: 1e-3 like fp32.
RTOL = {"resnet": 1e-3, "gpt": 2e-2, "compile": 1e-3, "graph": 1e-3}
ATOL = 1e-6


def check(name, fn):
    start = time.perf_counter()
    try:
        values = fn()
    except BaseException as e:  # noqa: BLE001 - every failure is a line of the report
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"FAIL {name} {type(e).__name__}: {first}", flush=True)
        traceback.print_exc(limit=6, file=sys.stderr)
        return
    print(f"OK {name} " + " ".join(f"{k}={float(v):.9g}" for k, v in values.items()), flush=True)
    print(f"time {name} {(time.perf_counter() - start) * 1e3:.0f} ms", flush=True)


def deterministic(torch):
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False  # autotuning times kernels: its pick may differ run to run
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # warn_only: an op without a deterministic kernel (none expected here) still runs, and says so
    torch.use_deterministic_algorithms(True, warn_only=True)


def digest(model, before=None):
    """abs-sum of the parameters, and the norm of what training moved them by (a skipped or wrong
    optimizer step shows there, not in the abs-sum, which the initial values dominate)."""
    params = [p.detach().double() for p in model.parameters()]
    out = {"params": sum(p.abs().sum().item() for p in params)}
    if before is not None:
        out["update"] = math.sqrt(sum((p - b).pow(2).sum().item() for p, b in zip(params, before)))
    return out


def snapshot(model):
    return [p.detach().double().clone() for p in model.parameters()]


# --- models (bench/gpu/torch_bench.py uses the transformer too) ---

def make_resnet(torch, widths=(16, 32, 64), blocks=1, classes=10):
    """A small ResNet (He et al.): a stem, then per stage `blocks` basic blocks (two 3x3
    convolutions with BatchNorm and a shortcut), the first of each later stage striding 2."""
    nn = torch.nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.short(x))

    layers: list = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    cin = widths[0]
    for i, w in enumerate(widths):
        for b in range(blocks):
            layers.append(Basic(cin, w, 2 if i > 0 and b == 0 else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def make_gpt(torch, layers=4, d=768, heads=12, vocab=50257, seq=1024):
    """GPT-2's shape (pre-LayerNorm blocks, causal attention through scaled_dot_product_attention,
    a 4x GELU MLP, tied embedding and head): GPT-2 small is layers=12, d=768, heads=12."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)
            self.head.weight = self.tok.weight
            for m in self.modules():  # GPT-2's initialisation (logits start near uniform)
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln(x))

    return GPT()


def gpt_step(torch, model, opt, idx, device):
    """One training step: next-token cross-entropy under bf16 autocast, then the optimizer."""
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), idx[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


# --- the checks ---

def resnet(torch, dev, tiny):
    torch.manual_seed(0)
    model = make_resnet(torch).to(dev)
    g = torch.Generator().manual_seed(1)
    n = 8 if tiny else 64
    x, y = torch.randn(n, 3, 32, 32, generator=g).to(dev), torch.randint(0, 10, (n,), generator=g).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before, losses = snapshot(model), []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"loss0": losses[0], "loss": losses[-1], **digest(model, before)}


def gpt(torch, dev, tiny):
    torch.manual_seed(0)
    seq, batch = (32, 2) if tiny else (256, 4)
    model = make_gpt(torch, layers=2 if tiny else 4, vocab=1000 if tiny else 50257, seq=seq).to(dev)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, model.tok.num_embeddings, (batch, seq + 1), generator=g).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    before, losses = snapshot(model), []
    for _ in range(3):
        losses.append(gpt_step(torch, model, opt, idx, dev).item())
    return {"loss0": losses[0], "loss": losses[-1], **digest(model, before)}


def compiled(torch, dev, tiny):
    """inductor's Triton kernels (fused LayerNorm, GELU, the reductions of the backward) beside
    cuBLAS; the compiled result is also checked against eager in the same run."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(256, 512), nn.LayerNorm(512), nn.GELU(), nn.Linear(512, 256), nn.Tanh()).to(dev)
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(3)).to(dev)
    eager = model(x)
    fn = torch.compile(model)
    out = fn(x)
    out.square().sum().backward()
    grad = sum(p.grad.double().abs().sum().item() for p in model.parameters())
    diff = (out - eager).abs().max().item()
    if diff > 1e-4:
        raise AssertionError(f"compiled and eager differ by {diff:.3g}")
    return {"out": out.double().abs().sum().item(), "sum": out.double().sum().item(), "grad": grad}


def graph(torch, dev, tiny):
    """PyTorch's whole-network capture (forward, backward, SGD step in one graph), replayed on new
    inputs copied into the static ones; on the CPU the same steps run eagerly."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(32, 128, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(10)]
    sx, sy = batches[0][0].to(dev), batches[0][1].to(dev)

    def step():
        loss = nn.functional.cross_entropy(model(sx), sy)
        loss.backward()
        opt.step()
        return loss
    before = snapshot(model)
    if dev == "cuda":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up off the capture (the optimizer's state, cuBLAS handles)
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(s)
        opt.zero_grad(set_to_none=True)
        cg = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cg):
            static_loss = step()
        run = cg.replay
    else:
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
        opt.zero_grad(set_to_none=True)
        static_loss = step()  # (the graph's one step, eagerly)

        def run():
            opt.zero_grad(set_to_none=True)
            static_loss.copy_(step())
    losses = []
    for bx, by in batches:
        sx.copy_(bx)
        sy.copy_(by)
        run()
        losses.append(static_loss.item())
    return {"loss0": losses[0], "loss": losses[-1], "losses": sum(losses), **digest(model, before)}


CHECKS = {"resnet": resnet, "gpt": gpt, "compile": compiled, "graph": graph}


# --- the comparer ---

def parse(path):
    """name -> {key: value} of a run's OK lines, name -> error of its FAIL lines, name -> its time
    (ms), and whether it ended."""
    ok, failed, times, done = {}, {}, {}, False
    for line in open(path, errors="replace"):
        parts = line.split()
        if parts[:1] == ["OK"] and len(parts) >= 2:
            try:
                ok[parts[1]] = {k: float(v) for k, v in (p.split("=", 1) for p in parts[2:])}
            except ValueError:
                failed[parts[1]] = f"an unreadable line: {line.strip()[:200]!r}"
        elif parts[:1] == ["FAIL"] and len(parts) >= 2:
            failed[parts[1]] = " ".join(parts[2:])
        elif parts[:1] == ["time"] and len(parts) == 4:
            times[parts[1]] = parts[2]
        done |= parts == ["DONE"]
    return ok, failed, times, done


def compare(native_path, forwarded_path) -> int:
    missing = [p for p in (native_path, forwarded_path) if not os.path.exists(p)]
    if missing:
        print(f"DIFFERS run: no output file {', '.join(missing)}")
        return 1
    native, native_failed, native_times, native_done = parse(native_path)
    forwarded, forwarded_failed, forwarded_times, forwarded_done = parse(forwarded_path)
    status = 0
    if not native_done or not forwarded_done:
        print(f"DIFFERS run: {'native' if not native_done else 'forwarded'} run did not print DONE (it crashed or "
              "hung: see its output)")
        status = 1
    for name in sorted(set(native) | set(native_failed) | set(forwarded) | set(forwarded_failed)):
        if name not in native:
            print(f"DIFFERS {name}: the native run has no result ({native_failed.get(name, 'missing')}): "
                  "this check cannot be compared")
            status = 1
            continue
        if name not in forwarded:
            print(f"DIFFERS {name}: forwarded {forwarded_failed.get(name, 'missing')}")
            status = 1
            continue
        lacking = [key for key in native[name] if key not in forwarded[name]]
        if lacking:
            print(f"DIFFERS {name}: forwarded printed no {', '.join(lacking)}")
            status = 1
            continue
        rtol = RTOL.get(name, 1e-3)
        worst = []
        for key, n in native[name].items():
            f = forwarded[name][key]
            rel = abs(f - n) / max(abs(f), abs(n)) if f != n else 0.0
            worst.append((rel if abs(f - n) > ATOL else 0.0, key, n, f))
        rel, key, n, f = max(worst)
        took = f"; {native_times.get(name, '?')} ms native, {forwarded_times.get(name, '?')} ms forwarded"
        if rel <= rtol:
            print(f"same {name}: every value within {rtol:g} (largest: {key} {rel:.2g} relative{took})")
        else:
            print(f"DIFFERS {name}: {key} native {n!r} forwarded {f!r} ({rel:.2g} relative > {rtol:g}{took})")
            status = 1
    if not native and not forwarded:
        print("DIFFERS run: no check printed a result")
        status = 1
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="small sizes (for --device cpu)")
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated, of {','.join(CHECKS)}")
    ap.add_argument("--compare", nargs=2, metavar=("NATIVE", "FORWARDED"))
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    names = args.only.split(",")
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        ap.error(f"no check {', '.join(unknown)} (there are {', '.join(CHECKS)})")
    # cuBLAS is deterministic run to run only with a fixed workspace configuration (set before it loads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    deterministic(torch)
    for name in names:
        check(name, lambda fn=CHECKS[name]: fn(torch, args.device, args.tiny))
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

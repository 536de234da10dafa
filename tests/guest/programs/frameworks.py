"""What users run, on whatever libcuda.so.1 the loader finds: PyTorch, CuPy or numba-cuda doing a
little of everything they do (copies, elementwise kernels, reductions, cuBLAS, cuDNN, NVRTC, JIT
kernels, streams, the memory query). Run by bench/gpu/libcuda_gpu.sh natively and as a guest:

    python3 frameworks.py torch|cupy|numba

Each check prints `OK <framework> <check> <result>` (results rounded so that a native and a
forwarded run print the same text) or `FAIL <framework> <check> <error>`, and goes on to the next;
then DONE. A check's failure is what the guest library still lacks, which is what this is for."""

import sys
import time
import traceback


def check(framework, name, fn):
    start = time.perf_counter()
    try:
        result = fn()
    except BaseException as e:  # noqa: BLE001 - every failure is a line of the report
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"FAIL {framework} {name}: {type(e).__name__}: {first}", flush=True)
        traceback.print_exc(limit=3, file=sys.stderr)
        return
    took = (time.perf_counter() - start) * 1e3
    print(f"OK {framework} {name} {result}", flush=True)
    print(f"time {framework} {name} {took:.1f} ms", flush=True)


def rounded(x):
    return f"{float(x):.4g}"


def torch_checks():
    import torch
    f = "torch"
    check(f, "available", lambda: (torch.cuda.is_available(), torch.cuda.device_count()))
    check(f, "capability", lambda: torch.cuda.get_device_capability(0))
    check(f, "round trip", lambda: torch.arange(1 << 20, dtype=torch.float32).cuda().cpu()[-1].item())
    check(f, "elementwise", lambda: rounded((torch.arange(1 << 20, device="cuda", dtype=torch.float32) * 2 + 1)[-1]))
    check(f, "reduction", lambda: rounded(torch.ones(1 << 20, device="cuda").sum()))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, generator=g)
    check(f, "matmul fp32", lambda: rounded((a.cuda() @ a.cuda()).abs().sum().cpu() / (a @ a).abs().sum()))
    check(f, "matmul bf16", lambda: rounded((a.cuda().bfloat16() @ a.cuda().bfloat16()).float().abs().sum().cpu()
                                           / (a @ a).abs().sum()))
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    img = torch.randn(4, 3, 32, 32, generator=g)
    check(f, "conv2d cudnn", lambda: rounded(conv.cuda()(img.cuda()).cpu().sub(conv.cpu()(img)).abs().max() < 1e-3))
    check(f, "mem_get_info", lambda: torch.cuda.mem_get_info()[1] > 0)
    check(f, "curand", lambda: tuple(torch.rand(1000, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
                                     .shape))

    def train():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(32, 64, generator=g).cuda()
        y = torch.randint(0, 10, (32,), generator=g).cuda()
        for _ in range(20):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return f"{loss.item():.3f}"
    check(f, "train mlp", train)

    def graph():
        s = torch.cuda.Stream()
        x = torch.ones(1024, device="cuda")
        with torch.cuda.stream(s):
            y = x * 2
        torch.cuda.current_stream().wait_stream(s)
        cg = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cg):
            y = x * 3 + 1
        cg.replay()
        return rounded(y.sum())
    check(f, "cuda graph", graph)

    def graph_train():
        """PyTorch's whole-network capture: warm-up on a side stream, then forward, backward and
        the optimizer step captured once and replayed."""
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(32, 64, generator=g).cuda()
        y = torch.randint(0, 10, (32,), generator=g).cuda()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(s)
        cg = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(cg):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        for _ in range(20):
            cg.replay()
        return f"{loss.item():.3f}"
    check(f, "cuda graph train step", graph_train)
    check(f, "oom is OutOfMemoryError",
          lambda: _raises(torch.OutOfMemoryError, lambda: torch.empty(1 << 50, dtype=torch.uint8, device="cuda")))


def _raises(kind, fn):
    try:
        fn()
    except kind:
        return True
    return False


def cupy_checks():
    import cupy as cp
    f = "cupy"
    check(f, "device", lambda: cp.cuda.runtime.getDeviceCount())
    check(f, "round trip", lambda: int(cp.asnumpy(cp.arange(1 << 20, dtype=cp.int64))[-1]))
    check(f, "elementwise", lambda: rounded((cp.arange(1 << 20, dtype=cp.float32) * 2 + 1)[-1]))
    check(f, "reduction", lambda: rounded(cp.ones(1 << 20, dtype=cp.float32).sum()))
    a = cp.asarray([[float((i * 7 + j) % 13) for j in range(256)] for i in range(256)], dtype=cp.float32)
    check(f, "matmul cublas", lambda: rounded((a @ a).sum()))
    kernel = cp.RawKernel(r'''extern "C" __global__ void twice(float *x, int n)
        { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= 2; }''', "twice")

    def raw():
        x = cp.ones(1000, dtype=cp.float32)
        kernel((4,), (256,), (x, cp.int32(1000)))
        return rounded(x.sum())
    check(f, "rawkernel nvrtc", raw)
    check(f, "mem info", lambda: cp.cuda.runtime.memGetInfo()[1] > 0)


def numba_checks():
    import numpy as np
    from numba import cuda
    f = "numba"
    check(f, "detect", lambda: len(cuda.gpus))

    @cuda.jit
    def axpy(out, x, y, a):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a * x[i] + y[i]

    def run():
        x = np.arange(1 << 16, dtype=np.float32)
        out = cuda.device_array_like(x)
        axpy[(1 << 16) // 256, 256](out, cuda.to_device(x), cuda.to_device(x), np.float32(3))
        return rounded(out.copy_to_host().sum())
    check(f, "jit kernel", run)


if __name__ == "__main__":
    {"torch": torch_checks, "cupy": cupy_checks, "numba": numba_checks}[sys.argv[1]]()
    print("DONE", flush=True)

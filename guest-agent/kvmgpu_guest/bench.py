"""Guest-side measurements: `python -m kvmgpu_guest.bench [--json] [--kernels PTX]`.

Needs a vGPU (KVMGPU_SOCKET/KVMGPU_SHM in loopback, or the VM's devices); `kvmgpu bench` on the
host starts a loopback worker and runs this. Measures, through the forwarded driver API:
- a synchronous call's round trip (cuStreamQuery), in µs;
- a queued launch of an empty kernel, amortised (N launches, then one synchronize), in µs;
- host-to-device copy bandwidth through the region against a plain in-process copy of the same size.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

from . import driver as cuda
from .cli import vgpu_info

SIZES = (1 << 20, 16 << 20, 64 << 20)


def _check(result):
    if result[0] != cuda.CUresult.CUDA_SUCCESS:
        raise SystemExit(f"kvmgpu bench: {cuda.cuGetErrorName(result[0])[1].decode()}")
    return result[1] if len(result) == 2 else result[1:]


def _best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def measure(kernels: str, launches: int = 20000, round_trips: int = 2000) -> dict:
    _check(cuda.cuInit(0))
    dev = _check(cuda.cuDeviceGet(0))
    _check(cuda.cuCtxCreate(0, dev))
    out: dict = {}

    def rtt():
        t = time.perf_counter()
        for _ in range(round_trips):
            cuda.cuStreamQuery(0)
        return (time.perf_counter() - t) / round_trips * 1e6
    rtt()
    out["sync_call_us"] = _best(rtt, 3)

    with open(kernels, "rb") as f:
        module = _check(cuda.cuModuleLoadData(f.read()))
    spin = _check(cuda.cuModuleGetFunction(module, b"spin"))
    args = ((0,), (ctypes.c_longlong,))

    def launch():
        t = time.perf_counter()
        for _ in range(launches):
            cuda.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, args, 0)
        _check(cuda.cuCtxSynchronize())
        return (time.perf_counter() - t) / launches * 1e6
    launch()
    out["queued_launch_us"] = _best(launch, 3)

    copies = []
    for size in SIZES:
        src = bytearray(os.urandom(1024)) * (size // 1024)
        dst = bytearray(size)
        dptr = _check(cuda.cuMemAlloc(size))

        def forwarded(dptr=dptr, src=src, size=size):
            t = time.perf_counter()
            _check(cuda.cuMemcpyHtoD(dptr, src, size))
            _check(cuda.cuCtxSynchronize())  # until the bytes have landed, not just left the guest
            return time.perf_counter() - t

        def local(dst=dst, src=src):
            t = time.perf_counter()
            memoryview(dst)[:] = src
            return time.perf_counter() - t
        fwd, loc = _best(forwarded, 5), _best(local, 5)
        copies.append({"bytes": size, "forwarded_gbs": size / fwd / 1e9, "memcpy_gbs": size / loc / 1e9,
                       "ratio": loc / fwd})
        _check(cuda.cuMemFree(dptr))
    out["htod"] = copies
    out["backend"] = vgpu_info().get("backend")  # (a monitor session's question, beside this one)
    _check(cuda.cuCtxSynchronize())
    return out


def table(r: dict) -> str:
    lines = [f"kvmgpu guest benchmark (backend {r['backend']}, kvmgpu_guest.driver on the guest's libcuda.so.1)",
             "",
             f"{'synchronous call round trip (cuStreamQuery)':<46} {r['sync_call_us']:8.1f} µs",
             f"{'queued empty-kernel launch, amortised':<46} {r['queued_launch_us']:8.1f} µs",
             "",
             f"{'host-to-device copy':<22} {'forwarded':>12} {'local memcpy':>14} {'ratio':>8}"]
    for c in r["htod"]:
        lines.append(f"{str(c['bytes'] >> 20) + ' MiB':<22} {c['forwarded_gbs']:>9.2f} GB/s"
                     f" {c['memcpy_gbs']:>9.2f} GB/s {c['ratio']:>8.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kvmgpu_guest.bench", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--kernels", default=os.environ.get("KVMGPU_BENCH_KERNELS", ""),
                   help="PTX with a `spin(long long)` kernel (tests/kernels/kernels.ptx)")
    p.add_argument("--launches", type=int, default=20000)
    args = p.parse_args(argv)
    if not args.kernels:
        print("kvmgpu-guest bench: no kernels (pass --kernels tests/kernels/kernels.ptx)", file=sys.stderr)
        return 2
    r = measure(args.kernels, args.launches)
    print(json.dumps(r, indent=2) if args.json else table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""In-guest measurement of a kvmgpu vGPU's forwarding costs.

    kvmgpu-guest run -- python3 vgpu_bench.py [--seconds S] [--sizes 1M,16M]

- a synchronous call's round trip: cuStreamQuery(0), guest -> host worker -> guest, in µs
  (median and best of batches);
- host-to-device and device-to-host copy bandwidth through the shared region (cuMemcpyHtoD /
  cuMemcpyDtoH of one buffer, repeated), in MiB/s, per size.

Prints a small table, then one line `VGPU_BENCH_JSON {...}` with the same figures. The figures say
what this VM's path costs; under TCG (no KVM) they measure the emulator, not kvmgpu.
"""

import argparse
import json
import os
import statistics
import sys
import time

from cuda.bindings import driver as cuda

MIB = 1 << 20


def check(result, what):
    if result[0] != cuda.CUresult.CUDA_SUCCESS:
        raise SystemExit(f"vgpu_bench: {what}: {cuda.cuGetErrorName(result[0])[1].decode()}")
    return result[1] if len(result) == 2 else result[1:]


def parse_size(text: str) -> int:
    text = text.strip().upper()
    for suffix, mult in (("K", 1 << 10), ("M", MIB), ("G", 1 << 30)):
        if text.endswith(suffix):
            return int(text[:-1]) * mult
    return int(text)


def timed_batches(fn, budget_s: float, per_batch: int):
    """Run fn per_batch times per batch until budget_s is spent (at least 3 batches); seconds per call."""
    out = []
    end = time.perf_counter() + budget_s
    while len(out) < 3 or time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(per_batch):
            fn()
        out.append((time.perf_counter() - t) / per_batch)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
    ap.add_argument("--sizes", default="1M,8M", help="copy sizes, comma-separated (K/M/G)")
    args = ap.parse_args()

    check(cuda.cuInit(0), "cuInit")
    dev = check(cuda.cuDeviceGet(0), "cuDeviceGet")
    check(cuda.cuCtxCreate(0, dev), "cuCtxCreate")
    res: dict = {"pid": os.getpid()}

    # a synchronous call's round trip
    def query():
        err, = cuda.cuStreamQuery(0)
        if err != cuda.CUresult.CUDA_SUCCESS:
            raise SystemExit(f"vgpu_bench: cuStreamQuery: {err}")
    query()
    rtt = timed_batches(query, args.seconds, 50)
    res["sync_call_us"] = {"median": statistics.median(rtt) * 1e6, "best": min(rtt) * 1e6,
                           "calls": 50 * len(rtt)}

    # copy bandwidth through the region
    res["copy"] = []
    for size in (parse_size(s) for s in args.sizes.split(",") if s.strip()):
        host = bytearray(os.urandom(4096)) * (size // 4096) + bytearray(size % 4096)
        back = bytearray(size)
        dptr = check(cuda.cuMemAlloc(size), f"cuMemAlloc {size}")

        def htod(dptr=dptr, host=host, size=size):
            check(cuda.cuMemcpyHtoD(dptr, host, size), "cuMemcpyHtoD")

        def dtoh(back=back, dptr=dptr, size=size):
            check(cuda.cuMemcpyDtoH(back, dptr, size), "cuMemcpyDtoH")
        htod()
        dtoh()
        if back != host:
            raise SystemExit(f"vgpu_bench: {size} bytes did not come back as sent")
        h = timed_batches(htod, args.seconds, 1)
        d = timed_batches(dtoh, args.seconds, 1)
        check(cuda.cuMemFree(dptr), "cuMemFree")
        res["copy"].append({"bytes": size,
                            "htod_mib_s": size / MIB / statistics.median(h), "htod_best_mib_s": size / MIB / min(h),
                            "dtoh_mib_s": size / MIB / statistics.median(d), "dtoh_best_mib_s": size / MIB / min(d),
                            "repeats": [len(h), len(d)]})

    r = res["sync_call_us"]
    print(f"{'measurement':<28} {'median':>12} {'best':>12}")
    print(f"{'sync call (cuStreamQuery)':<28} {r['median']:>9.1f} µs {r['best']:>9.1f} µs   ({r['calls']} calls)")
    for c in res["copy"]:
        mib = c["bytes"] / MIB
        print(f"{f'HtoD {mib:g} MiB':<28} {c['htod_mib_s']:>7.1f} MiB/s {c['htod_best_mib_s']:>7.1f} MiB/s")
        print(f"{f'DtoH {mib:g} MiB':<28} {c['dtoh_mib_s']:>7.1f} MiB/s {c['dtoh_best_mib_s']:>7.1f} MiB/s")
    print("VGPU_BENCH_JSON " + json.dumps(res, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs in the test guest, two at once: the vGPU's quota is the VM's, whichever process allocates.

    kvmgpu-guest run -- python3 quota_share.py holder DIR MIB
    kvmgpu-guest run -- python3 quota_share.py taker  DIR MIB

The holder allocates MIB and says so (DIR/held), then keeps it until the taker is done (DIR/done).
The taker waits for DIR/held, sees the holder's memory as used in cuMemGetInfo, asks for MIB too
(over the quota when 2 * MIB > quota: CUDA_ERROR_OUT_OF_MEMORY) and for what is left, in whole
allocation granules (succeeds).
Each prints `QUOTA_SHARE <role> {json}` and exits 0 when everything came out as expected.
"""
import json
import os
import sys
import time

from cuda.bindings import driver as cuda

MIB = 1 << 20
GRANULE = 2 * MIB
ROOM_FOR_OTHERS = 16 * MIB


def name(err):
    return cuda.cuGetErrorName(err)[1].decode()


def wait_for(path, timeout=60.0):
    end = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > end:
            raise SystemExit(f"quota_share: timed out waiting for {path}")
        time.sleep(0.05)


def main(role, where, mib):
    out = {"pid": os.getpid()}
    assert cuda.cuInit(0)[0] == 0
    err, dev = cuda.cuDeviceGet(0)
    err, ctx = cuda.cuCtxCreate(0, dev)
    assert err == 0, name(err)
    ok = True
    if role == "holder":
        err, ptr = cuda.cuMemAlloc(mib * MIB)
        out["alloc"] = name(err)
        ok = err == 0
        _, free, total = cuda.cuMemGetInfo()
        out["free_mib"], out["total_mib"] = free // MIB, total // MIB
        open(os.path.join(where, "held"), "w").close()
        wait_for(os.path.join(where, "done"))
        if err == 0:
            out["free"] = name(cuda.cuMemFree(ptr)[0])
    else:
        wait_for(os.path.join(where, "held"))
        try:
            _, free, total = cuda.cuMemGetInfo()
            out["free_mib"], out["total_mib"] = free // MIB, total // MIB
            out["used_by_others_mib"] = (total - free) // MIB
            err, ptr = cuda.cuMemAlloc(mib * MIB)
            out["same_alloc"] = name(err)
            if err == 0:
                cuda.cuMemFree(ptr)
            # what is left, in whole granules (a large allocation is charged at its size on the
            # GPU, whole 2 MiB granules, docs/security.md, as the driver takes it), less room for
            # the third process running beside these two (vector_demo: its buffers and module),
            # which would otherwise find the quota spent
            err2, ptr2 = cuda.cuMemAlloc(free - free % GRANULE - ROOM_FOR_OTHERS)
            out["rest_alloc"] = name(err2)
            if err2 == 0:
                cuda.cuMemFree(ptr2)
            ok = (out["used_by_others_mib"] >= mib and err == cuda.CUresult.CUDA_ERROR_OUT_OF_MEMORY
                  and err2 == 0)
        finally:
            open(os.path.join(where, "done"), "w").close()
    cuda.cuCtxDestroy(ctx)
    out["ok"] = ok
    print(f"QUOTA_SHARE {role} " + json.dumps(out, sort_keys=True), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

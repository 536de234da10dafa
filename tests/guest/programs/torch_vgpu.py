"""PyTorch (a CUDA build, unmodified) on the vGPU as a guest sees it: the device through NVML and
the runtime, the quota as its memory, copies, the caching allocator's out-of-memory error at the
quota and the program going on after it. Prints `OK <check> <result>` / `FAIL <check> ...`, then
DONE. Run by tests/guest/test_torch.py against a sim worker (which runs no PyTorch kernel: these
checks need none) and on the GPU machine by bench/gpu/libcuda_gpu.sh's frameworks (frameworks.py)."""

import sys

import torch


def check(name, ok, detail=""):
    print(f"{'OK' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)


quota = int(sys.argv[1])
check("available", torch.cuda.is_available() and torch.cuda.device_count() == 1,
      f"{torch.cuda.is_available()} {torch.cuda.device_count()}")
props = torch.cuda.get_device_properties(0)
check("total memory is the quota", props.total_memory == quota, str(props.total_memory))
free, total = torch.cuda.mem_get_info()
check("mem_get_info is the quota", total == quota and 0 < free <= quota, f"{free} {total}")
x = torch.arange(1 << 20, dtype=torch.float32)
y = x.cuda()
check("round trip", bool(torch.equal(y.cpu(), x)))
check("device to device", bool(torch.equal(y.clone().cpu(), x)))
pinned = torch.empty(1 << 20, dtype=torch.float32).pin_memory()
pinned.copy_(y, non_blocking=True)
torch.cuda.synchronize()
check("page-locked copy", bool(torch.equal(pinned, x)))
held = torch.empty(quota // 2, dtype=torch.uint8, device="cuda")
try:
    torch.empty(quota // 2 + (64 << 20), dtype=torch.uint8, device="cuda")
    check("past the quota is OutOfMemoryError", False, "it was allocated")
except torch.OutOfMemoryError as e:
    text = str(e)
    gib = f"{quota / (1 << 30):.2f} GiB"
    check("past the quota is OutOfMemoryError", gib in text, text.splitlines()[0][:200])
del held
torch.cuda.empty_cache()
again = torch.empty(quota // 2 + (64 << 20), dtype=torch.uint8, device="cuda")
check("after empty_cache the same allocation fits", again.numel() == quota // 2 + (64 << 20))
del again, y
torch.cuda.empty_cache()
check("everything freed", torch.cuda.memory_allocated() == 0 and torch.cuda.mem_get_info()[0] > quota // 2,
      str(torch.cuda.mem_get_info()[0]))
# cuBLAS starts: cublasCreate looks the driver up with dlsym (every driver symbol must be there:
# without them cuBLASLt's start-up failed, CUBLAS_STATUS_INTERNAL_ERROR) and asks about its own
# empty kernel (the sim has its twin); the handle is made with no GEMM run
try:
    check("cuBLAS starts", torch.cuda.current_blas_handle() != 0)
except RuntimeError as e:
    check("cuBLAS starts", False, str(e).splitlines()[0][:200])
print("DONE", flush=True)

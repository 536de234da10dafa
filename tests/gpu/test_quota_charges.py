"""On the GPU: the quota charges at least what the driver really takes (allocation granularity,
module globals). Run by tests/gpu/run_on_h200.sh; skipped where there is no GPU."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import Op
from kvmgpu_wire.region import Region

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))
from kvmgpu.worker import Channel, VGpu  # noqa: E402

from rawguest import Guest  # noqa: E402

pytestmark = pytest.mark.gpu
MIB = 1 << 20


@pytest.fixture
def backend():
    from kvmgpu.backend.cuda import CudaBackend
    b = CudaBackend(0)
    yield b
    b.close()


def test_the_granularity_is_the_drivers(backend, record):
    g = backend.alloc_granularity
    assert g >= 4096 and g & (g - 1) == 0
    record("allocation_granularity", {"bytes": g})


@pytest.mark.parametrize("nbytes, count", [(1, 4096), (512, 4096), (4096, 2048), (100_000, 256),
                                           (MIB - 1, 64), (MIB + 1, 64), (3 * MIB, 32), (64 * MIB, 4)])
def test_an_allocation_is_charged_at_least_what_it_takes(backend, record, nbytes, count):
    """`count` allocations of `nbytes` take (cuMemGetInfo) no more than they are charged, give or
    take the one page small allocations are carved from. Run with the GPU to itself."""
    free0, _ = backend.mem_get_info()
    ptrs = [backend.mem_alloc(nbytes) for _ in range(count)]
    free1, _ = backend.mem_get_info()
    for p in ptrs:
        backend.mem_free(p)
    taken, charged = free0 - free1, count * backend.allocation_size(nbytes)
    record(f"allocation_{nbytes}x{count}", {"taken": taken, "charged": charged,
                                            "granularity": backend.alloc_granularity})
    assert taken <= charged + backend.alloc_granularity, (taken, charged)


def ptx_with_global(nbytes: int) -> bytes:
    ptx = (Path(__file__).resolve().parents[1] / "kernels" / "kernels.ptx").read_bytes()
    return ptx + b"\n.global .align 8 .b8 kvmgpu_big[%d];\n" % nbytes


@pytest.fixture
def vgpu_on_cuda():
    """(make(quota) -> Guest): a VGpu on the cuda backend, in this process, and a guest on it.
    The region lives in /dev/shm as a worker's does: the driver cannot pin (cuMemHostRegister)
    a mapping of a file on an overlay filesystem (CUDA_ERROR_INVALID_VALUE on the H200 machine)."""
    made, paths = [], []

    def make(quota: int) -> Guest:
        from kvmgpu.backend.cuda import CudaBackend
        paths.append(f"/dev/shm/kvmgpu-test-quota-{os.getpid()}-{len(made)}")
        region = Region.open_file(paths[-1], 8 * MIB, create=True)
        vg = VGpu(lambda: CudaBackend(0), quota, region)
        g = Guest(Channel(vg, 1).receive, region, 1)
        made.append((vg, region, g))
        g.hello(window=4 * MIB)
        g.vgpu = vg
        return g
    yield make
    for vg, region, g in reversed(made):  # (each closes the one primary context: the last first)
        if g.welcome is not None:
            g.window.view.release()
        vg.close()
        region.close()
    for p in paths:
        Path(p).unlink(missing_ok=True)


def test_a_modules_globals_are_charged_on_the_gpu(vgpu_on_cuda, record):
    image = ptx_with_global(200_000_000)
    small = vgpu_on_cuda(128 * MIB)
    small.window.view[:len(image)] = image
    r = small.call(Op.MODULE_LOAD, 0, len(image), blob=hashlib.sha256(image).digest())
    assert r.status == CUresult.CUDA_ERROR_OUT_OF_MEMORY and small.vgpu.quota.used == 0
    big = vgpu_on_cuda(1 << 30)
    m = big.load(image)
    used = big.vgpu.quota.used
    record("module_globals_charge", {"declared": 200_000_000, "charged": used})
    assert used >= 200_000_000
    big.ok(Op.MODULE_UNLOAD, m)
    assert big.vgpu.quota.used == 0

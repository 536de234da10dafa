"""Python twins of the test kernels (tests/kernels/kernels.cu), for the sim development backend.

The sim backend cannot run GPU code. It reads each kernel's parameter layout from the real PTX
image, decodes the argument bytes by it, and runs the function registered here under the same
entry-point name. Only the test kernels are here, under their C names and, for the nvcc-built CUDA C++ test programs
(whose kernels the runtime registers from a fatbin), their mangled names; a kernel with no twin
cannot be launched on sim.

A twin gets a `SimLaunch` (the grid, the block, device memory, the module's globals) and the
decoded arguments. Memory is reached only through `launch.floats(ptr, count)`, which raises
`IllegalAddress` when the range is not inside one allocation, as a GPU faults.
"""

from __future__ import annotations

import struct
import time
from array import array
from dataclasses import dataclass
from typing import Callable

U64 = (1 << 64) - 1


class IllegalAddress(Exception):
    """A kernel touched memory outside every allocation of the context."""


@dataclass
class SimLaunch:
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    resolve: Callable[[int, int], memoryview]  # (ptr, nbytes) -> view, or IllegalAddress
    globals: dict  # name -> (ptr, size) of the module's __device__ variables

    @property
    def threads_x(self) -> int:
        """Distinct values of blockIdx.x * blockDim.x + threadIdx.x."""
        return self.grid[0] * self.block[0]

    def floats(self, ptr: int, count: int) -> memoryview[float]:
        return self.resolve(ptr & U64, 4 * count).cast("f")


@dataclass(frozen=True)
class SimKernel:
    name: str
    params: str  # struct format of each C parameter, in order: 'Q' pointer, 'i' int, 'f' float, 'q' long long
    run: Callable


KERNELS: dict[str, SimKernel] = {}


def kernel(params: str, *mangled: str):
    """Register a twin under its name and under the names C++ gives kernels of that signature
    (nvcc-built CUDA C++ programs register their kernels by mangled name)."""
    def register(fn):
        for name in (fn.__name__, *mangled):
            KERNELS[name] = SimKernel(name, params, fn)
        return fn
    return register


def decode_args(k: SimKernel, layout: list[tuple[int, int]], blob: bytes) -> list:
    """The C arguments of `k` from `blob`, laid out as `layout` (offset, size) says."""
    values = []
    for fmt, (offset, size) in zip(k.params, layout):
        s = struct.Struct("<" + fmt)
        if s.size != size:
            raise ValueError(f"parameter at offset {offset} is {size} bytes in the image, "
                             f"{s.size} in the sim twin")
        values.append(s.unpack_from(blob, offset)[0])
    return values


@kernel("QQQi", "_Z9vectorAddPKfS0_Pfi", "_Z10vector_addPKfS0_Pfi")
def vector_add(launch: SimLaunch, a: int, b: int, c: int, n: int) -> None:
    n = min(n, launch.threads_x)
    if n <= 0:
        return
    av, bv, cv = launch.floats(a, n), launch.floats(b, n), launch.floats(c, n)
    cv[:] = array("f", [x + y for x, y in zip(av, bv)])


@kernel("fQQi", "_Z5saxpyfPKfPfi")
def saxpy(launch: SimLaunch, a: float, x: int, y: int, n: int) -> None:
    n = min(n, launch.threads_x)
    if n <= 0:
        return
    xv, yv = launch.floats(x, n), launch.floats(y, n)
    yv[:] = array("f", [a * p + q for p, q in zip(xv, yv)])


@kernel("", "_ZN6cublas8internal23nopClusterDiscoveryToolEv")
def cublas_nop(launch: SimLaunch) -> None:
    """cuBLAS's own empty kernel, which cublasCreate asks the cluster occupancy of (and so needs
    to exist): with it, cuBLAS's start-up runs on the sim, through the guest library's driver
    lookups (tests/guest/test_torch.py)."""


@kernel("q")
def spin(launch: SimLaunch, nanoseconds: int) -> None:
    if nanoseconds > 0:
        time.sleep(nanoseconds / 1e9)


@kernel("Qq")
def write_oob(launch: SimLaunch, p: int, index: int) -> None:
    if launch.threads_x > 0:
        launch.floats(p + 4 * index, 1)[0] = 42.0


@kernel("QQi")
def stencil1d(launch: SimLaunch, src: int, dst: int, n: int) -> None:
    n = min(n, launch.threads_x)
    if n <= 0:
        return
    iv, ov = launch.floats(src, n), launch.floats(dst, n)
    a = iv.tolist()
    third = 1.0 / 3.0
    out = array("f", a)
    if n > 2:
        out[1:n - 1] = array("f", [(a[i - 1] + a[i] + a[i + 1]) * third for i in range(1, n - 1)])
    ov[:] = out


@kernel("Qi", "_Z15scale_by_globalPfi")
def scale_by_global(launch: SimLaunch, x: int, n: int) -> None:
    n = min(n, launch.threads_x)
    if n <= 0:
        return
    ptr, _ = launch.globals["scale"]
    s = launch.floats(ptr, 1)[0]
    xv = launch.floats(x, n)
    xv[:] = array("f", [v * s for v in xv])


@kernel("QQQii", "_Z13MatrixMulCUDAILi16EEvPfS0_S0_ii")
def matrix_mul(launch: SimLaunch, c: int, a: int, b: int, wa: int, wb: int) -> None:
    """C = A B as cuda-samples' matrixMul computes it: one thread per element of C, the grid
    covering C exactly (A is rows x wa, B wa x wb, rows = grid.y * block.y)."""
    rows, cols = launch.grid[1] * launch.block[1], launch.grid[0] * launch.block[0]
    if rows <= 0 or cols <= 0 or wa <= 0 or wb < cols:
        return
    av, bv, cv = launch.floats(a, rows * wa), launch.floats(b, wa * wb), launch.floats(c, (rows - 1) * wb + cols)
    bcols = [bv[j::wb][:wa] for j in range(cols)]
    for i in range(rows):
        arow = av[i * wa: (i + 1) * wa]
        cv[i * wb: i * wb + cols] = array("f", [sum(x * y for x, y in zip(arow, bcol)) for bcol in bcols])

"""Which GPU a vGPU goes on. No GPU is promised more than it has:
for each GPU, the sum over its vGPUs of (gmem + context_overhead) <= total memory."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import NoRoom, NotFound
from .inventory import Gpu
from .sizes import format_size
from .vgpu import VGpu


@dataclass(frozen=True)
class GpuUse:
    gpu: Gpu
    promised: int   # bytes promised to vGPUs on this GPU, context overhead included
    vgpus: int      # how many vGPUs are on it

    @property
    def free(self) -> int:
        """Bytes still free to promise (negative if over-promised, e.g. after a GPU swap)."""
        return self.gpu.total_memory - self.promised


def on_gpu(vgpu: VGpu, gpu: Gpu, gpus: list[Gpu]) -> bool:
    """Whether `vgpu` sits on `gpu`: by uuid when its uuid is a GPU here, else by index."""
    if any(g.uuid == vgpu.gpu_uuid for g in gpus):
        return vgpu.gpu_uuid == gpu.uuid
    return vgpu.gpu == gpu.index


def usage(gpus: list[Gpu], vgpus: list[VGpu], context_overhead: int,
          ignore_vm: str | None = None) -> list[GpuUse]:
    """What each GPU has promised; `ignore_vm`'s vGPU is left out (it is being replaced)."""
    uses = []
    for gpu in gpus:
        mine = [v for v in vgpus if v.vm != ignore_vm and on_gpu(v, gpu, gpus)]
        uses.append(GpuUse(gpu, sum(v.gmem + context_overhead for v in mine), len(mine)))
    return uses


def choose_gpu(gpus: list[Gpu], vgpus: list[VGpu], gmem: int, context_overhead: int,
               want: int | None = None, vm: str | None = None) -> Gpu:
    """The GPU a vGPU of `gmem` bytes for `vm` goes on.

    `want` is a GPU index, or None for auto: the GPU the VM already has if it still fits there,
    else the one with the most memory free to promise (lowest index on a tie).
    Raises NotFound for an unknown index and NoRoom, saying what is free where, when it fits nowhere.
    """
    need = gmem + context_overhead
    uses = usage(gpus, vgpus, context_overhead, ignore_vm=vm)
    if want is not None:
        chosen = [u for u in uses if u.gpu.index == want]
        if not chosen:
            raise NotFound(f"there is no GPU {want}",
                           f"GPUs here: {', '.join(str(g.index) for g in gpus)} (see `kvmgpu gpus`)")
        candidates = chosen
    else:
        current = [u for v in vgpus if v.vm == vm for u in uses if on_gpu(v, u.gpu, gpus)]
        candidates = [u for u in current if u.free >= need] or \
            sorted(uses, key=lambda u: (-u.free, u.gpu.index))
    for u in candidates:
        if u.free >= need:
            return u.gpu
    where = "; ".join(f"GPU {u.gpu.index} has {format_size(max(u.free, 0))} free to promise"
                      f" of {format_size(u.gpu.total_memory)}" for u in candidates)
    raise NoRoom(f"a vGPU of {format_size(gmem)} (+ {format_size(context_overhead)} context overhead"
                 f" = {format_size(need)}) does not fit: {where}",
                 "ask for less --gmem, pick another --gpu, or detach a vGPU (see `kvmgpu gpus`)")

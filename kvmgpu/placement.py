"""Which GPU a vGPU goes on. No GPU is promised more than it has:
for each GPU, the sum over the VMs on it of what each may take there (gmem + context_overhead)
<= total memory.

What a VM may take on a GPU is the larger of its configured vGPU (the domain's persistent
metadata, for its next boot) and, while it runs, the vGPU its worker serves now (the live XML's,
as it started): a change made while it runs takes effect only when it restarts, so until then both
are counted. A VM that moves to another GPU holds memory on both until it restarts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import NoRoom, NotFound
from .inventory import Gpu
from .sizes import format_size
from .vgpu import VGpu


@dataclass(frozen=True)
class GpuUse:
    gpu: Gpu
    promised: int   # bytes promised to vGPUs on this GPU, context overhead included
    vgpus: int      # how many VMs have a vGPU on it (configured or served now)

    @property
    def free(self) -> int:
        """Bytes still free to promise (negative if over-promised, e.g. after a GPU swap)."""
        return self.gpu.total_memory - self.promised


def on_gpu(vgpu: VGpu, gpu: Gpu, gpus: list[Gpu]) -> bool:
    """Whether `vgpu` sits on `gpu`: by uuid when its uuid is a GPU here, else by index."""
    if any(g.uuid == vgpu.gpu_uuid for g in gpus):
        return vgpu.gpu_uuid == gpu.uuid
    return vgpu.gpu == gpu.index


def claims(gpu: Gpu, gpus: list[Gpu], vgpus: list[VGpu], live: list[VGpu], context_overhead: int,
           ignore_vm: str | None = None) -> dict[str, int]:
    """{vm: bytes it may take on `gpu`}: the larger of its configured vGPU there (left out for
    `ignore_vm`, whose vGPU is being replaced) and the one its worker serves there now."""
    taken: dict[str, int] = {}
    for v in [v for v in vgpus if v.vm != ignore_vm] + list(live):
        if on_gpu(v, gpu, gpus):
            taken[v.vm] = max(taken.get(v.vm, 0), v.gmem + context_overhead)
    return taken


def usage(gpus: list[Gpu], vgpus: list[VGpu], context_overhead: int,
          ignore_vm: str | None = None, live: Sequence[VGpu] = ()) -> list[GpuUse]:
    """What each GPU has promised: to the configured `vgpus` and to the `live` ones (running VMs'
    vGPUs as their workers serve them); `ignore_vm`'s configured vGPU is left out (it is being
    replaced), what it serves now is not."""
    uses = []
    for gpu in gpus:
        taken = claims(gpu, gpus, vgpus, list(live), context_overhead, ignore_vm)
        uses.append(GpuUse(gpu, sum(taken.values()), len(taken)))
    return uses


def choose_gpu(gpus: list[Gpu], vgpus: list[VGpu], gmem: int, context_overhead: int,
               want: int | None = None, vm: str | None = None, live: Sequence[VGpu] = ()) -> Gpu:
    """The GPU a vGPU of `gmem` bytes for `vm` goes on.

    `want` is a GPU index, or None for auto: the GPU the VM already has if it still fits there,
    else the one with the most memory free to promise (lowest index on a tie). `live` are the
    running VMs' vGPUs as served now: they keep their memory until their VMs restart (on the GPU
    where `vm` runs now, its new vGPU needs only what exceeds what it takes there already).
    Raises NotFound for an unknown index and NoRoom, saying what is free where, when it fits nowhere.
    """
    need = gmem + context_overhead
    uses = usage(gpus, vgpus, context_overhead, ignore_vm=vm, live=live)

    def room(u: GpuUse) -> int:
        """What `vm` may promise itself on u's GPU: what is free plus what it takes there now."""
        serving = max((v.gmem + context_overhead for v in live if v.vm == vm and on_gpu(v, u.gpu, gpus)),
                      default=0)
        return u.free + serving

    if want is not None:
        chosen = [u for u in uses if u.gpu.index == want]
        if not chosen:
            raise NotFound(f"there is no GPU {want}",
                           f"GPUs here: {', '.join(str(g.index) for g in gpus)} (see `kvmgpu gpus`)")
        candidates = chosen
    else:
        current = [u for v in vgpus if v.vm == vm for u in uses if on_gpu(v, u.gpu, gpus)]
        candidates = [u for u in current if room(u) >= need] or \
            sorted(uses, key=lambda u: (-room(u), u.gpu.index))
    for u in candidates:
        if room(u) >= need:
            return u.gpu
    where = "; ".join(f"GPU {u.gpu.index} has {format_size(max(room(u), 0))} free to promise"
                      f" of {format_size(u.gpu.total_memory)}" for u in candidates)
    configured = {v.vm: v for v in vgpus}
    held = [v for v in live if v.vm != vm and any(on_gpu(v, u.gpu, gpus) for u in candidates)
            and (v.vm not in configured or (configured[v.vm].gmem, configured[v.vm].gpu_uuid) != (v.gmem, v.gpu_uuid))]
    note = (" (counting what running VMs with a change pending serve until they restart: "
            + ", ".join(f"{v.vm} {format_size(v.gmem)}" for v in held) + ")") if held else ""
    raise NoRoom(f"a vGPU of {format_size(gmem)} (+ {format_size(context_overhead)} context overhead"
                 f" = {format_size(need)}) does not fit: {where}{note}",
                 "ask for less --gmem, pick another --gpu, or detach a vGPU (see `kvmgpu gpus`)")

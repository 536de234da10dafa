"""kvmgpu's stand-in for `cuda.bindings`: only `driver` is provided (forwarded to the vGPU)."""

__version__ = "12.9.0+kvmgpu"

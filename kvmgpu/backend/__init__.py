"""Backends: `cuda` (the product, on cuda.bindings.driver) and `sim` (development, no GPU)."""

from __future__ import annotations

from ..errors import InvalidInput
from .base import Backend, CudaError, DeviceInfo

NAMES = ("sim", "cuda")


def get_backend(name: str, **opts) -> Backend:
    """A new backend. Options: `gpu` (index, cuda), `total_memory` (bytes, sim)."""
    if name == "sim":
        from .sim import SimBackend
        opts.pop("gpu", None)
        return SimBackend(**opts)
    if name == "cuda":
        try:
            from .cuda import CudaBackend
        except ImportError as e:
            raise InvalidInput(f"the cuda backend is not available: {e}",
                               "install kvmgpu[cuda] (cuda-bindings) on a host with an NVIDIA driver, "
                               "or use --backend sim for development") from None
        opts.pop("total_memory", None)
        return CudaBackend(**opts)
    raise InvalidInput(f"unknown backend {name!r}", f"use one of: {', '.join(NAMES)}")


__all__ = ["Backend", "CudaError", "DeviceInfo", "get_backend", "NAMES"]

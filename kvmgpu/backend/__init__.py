"""Backends: `cuda` (the product, on cuda.bindings.driver) and `sim` (development, no GPU)."""

from __future__ import annotations

import ctypes

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
        opts.pop("total_memory", None)
        return _cuda_backend_class()(**opts)
    raise InvalidInput(f"unknown backend {name!r}", f"use one of: {', '.join(NAMES)}")


def _cuda_backend_class() -> type[Backend]:
    """CudaBackend, or InvalidInput naming everything the cuda backend lacks here: NVIDIA's driver
    (libcuda, which cuda-bindings would only fail to load at its first call) and cuda-bindings."""
    missing = []
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        missing.append("no NVIDIA driver (libcuda.so.1 cannot be loaded)")
    try:
        from .cuda import CudaBackend
    except ImportError as e:
        missing.append(f"no cuda-bindings ({e})")
    if missing:
        raise InvalidInput(f"the cuda backend is not available here: {'; '.join(missing)}",
                           "install NVIDIA's driver and kvmgpu[cuda] (cuda-bindings), "
                           "or use --backend sim for development")
    return CudaBackend


__all__ = ["Backend", "CudaError", "DeviceInfo", "get_backend", "NAMES"]

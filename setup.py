"""The one compiled piece of kvmgpu: the worker's launch loop (kvmgpu/backend/launcher.c), loaded
with ctypes. Optional: where it cannot be built, kvmgpu installs without it and the cuda backend
launches through cuda-bindings (kvmgpu/backend/launcher.py). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("kvmgpu.backend._launcher", ["kvmgpu/backend/launcher.c"],
                             extra_compile_args=["-O2"], optional=True)])

"""The one compiled piece of kvmgpu: the worker's driver calls on the hot path
(kvmgpu/backend/launcher.c, the extension module kvmgpu.backend._launcher). Optional: where it
cannot be built (no C compiler or no Python headers), kvmgpu installs without it and the cuda
backend makes those calls through cuda-bindings (kvmgpu/backend/launcher.py). Everything else is in
pyproject.toml."""

from setuptools import Extension, setup

# The wire format's C header (generated from the op specification) is the guest package's.
setup(ext_modules=[Extension("kvmgpu.backend._launcher", ["kvmgpu/backend/launcher.c"],
                             include_dirs=["guest-agent/include"], depends=["guest-agent/include/kvmgpu_wire.h"],
                             extra_compile_args=["-O2", "-Wall", "-Werror"], optional=True)])

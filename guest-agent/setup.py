"""The one compiled piece of the guest agent: the copier (kvmgpu_guest/copier.c, the extension
module kvmgpu_guest._copier), a memcpy shared by the calling thread and helper threads for the
bulk copies into and out of the shared window. Optional: where it cannot be built (no C compiler
or no Python headers) the agent installs without it and copies with Python's own means.
Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("kvmgpu_guest._copier", ["kvmgpu_guest/copier.c"],
                             extra_compile_args=["-O2", "-Wall", "-Werror"], optional=True)])

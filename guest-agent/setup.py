"""The compiled pieces of the guest agent, both optional: where they cannot be built (no C
compiler or no Python headers) the agent installs without them.

- the copier (kvmgpu_guest/copier.c, the extension module kvmgpu_guest._copier), a memcpy shared
  by the calling thread and helper threads for the bulk copies into and out of the shared window;
- the native library libcuda.so.1 (libcuda/, built by libcuda/build.py into kvmgpu_guest/lib/),
  which forwards the CUDA driver API for C programs and NVIDIA's libraries, and beside it
  libnvidia-ml.so.1 (libnvml/), NVML answering for the vGPU.

Everything else is in pyproject.toml."""

import importlib.util
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithLibcuda(build_ext):
    """The extension modules, then libcuda.so.1 into the package's lib/ (in place for an editable
    install), skipped with a warning where it does not build."""

    def run(self):
        super().run()
        spec = importlib.util.spec_from_file_location("libcuda_build", os.path.join(HERE, "libcuda", "build.py"))
        if spec is None:  # an sdist without the C sources
            return
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        root = HERE if self.inplace else self.build_lib
        try:
            build.build(os.path.join(root, "kvmgpu_guest", "lib"))
            build.build_nvml(os.path.join(root, "kvmgpu_guest", "lib"))
        except build.BuildError as e:
            print(f"warning: libcuda.so.1 or libnvidia-ml.so.1 not built, native CUDA programs will not run: {e}")


setup(ext_modules=[Extension("kvmgpu_guest._copier", ["kvmgpu_guest/copier.c"], include_dirs=["include"],
                             depends=["include/kvmgpu_copier.h"],
                             extra_compile_args=["-O2", "-Wall", "-Werror"], optional=True)],
      cmdclass={"build_ext": BuildWithLibcuda})

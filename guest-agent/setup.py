"""The compiled piece of the guest agent: the native library libcuda.so.1 (libcuda/, built by
libcuda/build.py into kvmgpu_guest/lib/), the one guest client, which forwards the CUDA driver API
for C programs, NVIDIA's libraries and kvmgpu_guest.driver, and beside it libnvidia-ml.so.1
(libnvml/), NVML answering for the vGPU. Where they cannot be built (no C compiler) the agent
installs without them (and kvmgpu_guest.driver says so when imported).

Everything else is in pyproject.toml."""

import importlib.util
import os

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithLibcuda(build_ext):
    """libcuda.so.1 and libnvidia-ml.so.1 into the package's lib/ (in place for an editable
    install), skipped with a warning where they do not build."""

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


class WithLibraries(Distribution):
    """A platform wheel, whose build_ext (which builds the libraries) runs, with no extension module."""

    def has_ext_modules(self):
        return True


setup(distclass=WithLibraries, cmdclass={"build_ext": BuildWithLibcuda})

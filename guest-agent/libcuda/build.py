"""Build the native guest libraries: libcuda.so.1 (and its libcuda.so link) from the C files here,
and libnvidia-ml.so.1 (and libnvidia-ml.so) from ../libnvml/ with this directory's session code.

    python3 guest-agent/libcuda/build.py OUT_DIR [extra compiler flags...]   # `make libcuda`: both

The guest package's build (guest-agent/setup.py) calls `build` and `build_nvml` into
kvmgpu_guest/lib/, the tests call them with the sanitizers' flags. Only the cu* API, and the
nvml* API, is exported (-fvisibility=hidden): the two libraries share no symbols."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent / "include"
SOURCES = ("api.c", "capture.c", "client.c", "copy2d.c", "export.c", "fatbin.c", "function.c", "host.c", "integrity.c",
           "json.c", "library.c", "memory.c", "module.c", "ordering.c", "pointer.c", "pool.c", "preferences.c",
           "procaddr.c", "sha256.c", "tensormap.c", "unforwarded.c")
NVML_DIR = HERE.parent / "libnvml"
NVML_SOURCES = (NVML_DIR / "nvml.c", NVML_DIR / "usage.c", NVML_DIR / "hosts.c", HERE / "client.c", HERE / "json.c",
                HERE / "sha256.c")
# -Bsymbolic-functions: the library's calls to its own exported functions stay its own, also in a
# process where another libcuda.so.1 (NVIDIA's) was loaded first (kvmgpu.benchgpu runs both)
FLAGS = ("-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-fPIC", "-shared", "-pthread",
         "-Wl,--no-undefined", "-Wl,-Bsymbolic-functions")
NAME = "libcuda.so.1"
NVML_NAME = "libnvidia-ml.so.1"


class BuildError(Exception):
    """No C compiler, or the library did not compile (the compiler's message)."""


def compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc) or shutil.which("gcc")


def _compile(out_dir, name: str, sources, extra) -> Path:
    cc = compiler()
    if cc is None:
        raise BuildError(f"no C compiler (install gcc) to build {name}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    cmd = [cc, *FLAGS, f"-Wl,-soname,{name}", *extra, "-I", str(INCLUDE), "-I", str(HERE),
           *(str(s) for s in sources), "-o", str(target)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{run.stderr}")
    link = out / name.rsplit(".", 1)[0]  # libcuda.so -> libcuda.so.1, for -lcuda
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(name)
    return target


def build(out_dir, extra=("-O2", "-g")) -> Path:
    """Compile libcuda.so.1 into `out_dir` (made if missing); its path."""
    return _compile(out_dir, NAME, (HERE / s for s in SOURCES), extra)


def build_nvml(out_dir, extra=("-O2", "-g")) -> Path:
    """Compile libnvidia-ml.so.1 into `out_dir` (made if missing); its path."""
    return _compile(out_dir, NVML_NAME, NVML_SOURCES, extra)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: build.py OUT_DIR [compiler flags...]")
    try:
        flags = tuple(sys.argv[2:]) or ("-O2", "-g")
        print(build(sys.argv[1], flags))
        print(build_nvml(sys.argv[1], flags))
    except BuildError as e:
        sys.exit(f"build.py: {e}")

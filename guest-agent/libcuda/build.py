"""Build the native guest library, libcuda.so.1 (and its libcuda.so link), from the C files here.

    python3 guest-agent/libcuda/build.py OUT_DIR [extra compiler flags...]   # `make libcuda`

The guest package's build (guest-agent/setup.py) calls `build` into kvmgpu_guest/lib/, the tests
call it with the sanitizers' flags. Only the cu* API is exported (-fvisibility=hidden)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent / "include"
SOURCES = ("api.c", "client.c", "copy2d.c", "export.c", "fatbin.c", "function.c", "host.c", "integrity.c", "json.c",
           "library.c", "memory.c", "module.c", "ordering.c", "pointer.c", "pool.c", "preferences.c", "procaddr.c",
           "sha256.c", "tensormap.c")
FLAGS = ("-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-fPIC", "-shared", "-pthread",
         "-Wl,-soname,libcuda.so.1", "-Wl,--no-undefined")
NAME = "libcuda.so.1"


class BuildError(Exception):
    """No C compiler, or the library did not compile (the compiler's message)."""


def compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc) or shutil.which("gcc")


def build(out_dir, extra=("-O2", "-g")) -> Path:
    """Compile the library into `out_dir` (made if missing); its path."""
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler (install gcc) to build libcuda.so.1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / NAME
    cmd = [cc, *FLAGS, *extra, "-I", str(INCLUDE), "-I", str(HERE), *(str(HERE / s) for s in SOURCES),
           "-o", str(target)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{run.stderr}")
    link = out / "libcuda.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(NAME)
    return target


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: build.py OUT_DIR [compiler flags...]")
    try:
        print(build(sys.argv[1], tuple(sys.argv[2:]) or ("-O2", "-g")))
    except BuildError as e:
        sys.exit(f"build.py: {e}")

"""Make the guest's native libraries the system's: `kvmgpu-guest register` writes a file in
/etc/ld.so.conf.d naming the package's library directory (libcuda.so.1, libnvidia-ml.so.1) and runs
ldconfig, so that `python train.py` finds them with no `kvmgpu-guest run` in front;
`kvmgpu-guest unregister` takes the file away again.

The dynamic loader's cache lists the directories of ld.so.conf before its default ones, so these
libraries come before an NVIDIA driver's in /usr/lib (a VM has none; a machine that has one should
not register)."""

from __future__ import annotations

import os
import subprocess

CONF = "/etc/ld.so.conf.d/kvmgpu-guest.conf"
LIBRARIES = ("libcuda.so.1", "libnvidia-ml.so.1")


class RegisterError(Exception):
    def __init__(self, what: str, hint: str = ""):
        super().__init__(what)
        self.what, self.hint = what, hint


def _ldconfig(ldconfig: list[str]) -> None:
    try:
        proc = subprocess.run(ldconfig, capture_output=True, text=True)
    except FileNotFoundError:
        raise RegisterError(f"{ldconfig[0]} is not there", "install libc-bin (Debian) or glibc") from None
    if proc.returncode != 0:
        raise RegisterError(f"{' '.join(ldconfig)} failed: {proc.stderr.strip() or proc.returncode}",
                            "run as root")


def resolved(ldconfig: list[str], name: str) -> str | None:
    """Where the loader's cache sends `name` (the first entry `ldconfig -p` lists), or None."""
    out = subprocess.run([*ldconfig, "-p"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        left, _, path = line.partition("=>")
        if left.strip().startswith(name + " "):
            return path.strip()
    return None


def register(lib_dir: str, conf: str = CONF, ldconfig: list[str] | None = None) -> dict:
    """Write `conf` naming `lib_dir`, rebuild the loader's cache; what each library resolves to now."""
    ldconfig = ldconfig or ["ldconfig"]
    missing = [n for n in LIBRARIES if not os.path.exists(os.path.join(lib_dir, n))]
    if "libcuda.so.1" in missing:
        raise RegisterError(f"{lib_dir} has no libcuda.so.1: the package was installed without a C compiler",
                            "install gcc and reinstall kvmgpu-guest")
    text = f"# kvmgpu-guest: the vGPU's libcuda.so.1 and libnvidia-ml.so.1 (kvmgpu-guest unregister removes it)\n" \
           f"{lib_dir}\n"
    changed = not os.path.exists(conf) or open(conf).read() != text
    if changed:
        tmp = f"{conf}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, conf)
        except PermissionError:
            raise RegisterError(f"cannot write {conf}", "run as root") from None
        except FileNotFoundError:
            raise RegisterError(f"cannot write {conf}: its directory is missing", "is this a glibc system?") from None
    _ldconfig(ldconfig)
    return {"conf": conf, "changed": changed,
            "resolved": {n: resolved(ldconfig, n) for n in LIBRARIES if n not in missing}}


def unregister(conf: str = CONF, ldconfig: list[str] | None = None) -> bool:
    """Remove `conf` and rebuild the cache; whether there was one."""
    ldconfig = ldconfig or ["ldconfig"]
    try:
        os.unlink(conf)
    except FileNotFoundError:
        return False
    except PermissionError:
        raise RegisterError(f"cannot remove {conf}", "run as root") from None
    _ldconfig(ldconfig)
    return True

#!/usr/bin/env python3
"""Build the kvmgpu test guest: a Debian kernel and an initramfs with busybox, Python 3.11 and the
guest agent, cached between runs.

    python3 guest-agent/image/build_image.py --out DIR      # prints KERNEL=... and INITRD=...

Layers (each cached under $XDG_CACHE_HOME/kvmgpu/guest-image, keyed by a hash of its inputs):

  debs/      the .deb files (``apt-get download``), unpacked with ``dpkg-deb -x``: no install on the host
  base-*.cpio.gz   busybox-static, /usr/bin/python3.11 + its libraries + a pruned stdlib, kernel
                   modules (virtio_pci, virtio_console, virtio_rng and what they depend on), /init
  agent-*.cpio.gz  the guest-agent packages (guest-agent/kvmgpu_guest, kvmgpu_wire) and /usr/bin/kvmgpu-guest
  initrd-*.img     base + agent, concatenated (Linux unpacks concatenated cpio archives in order)

A run's payload is one more small archive (``/payload/run.sh`` and files) appended to the initrd:
see :func:`payload_archive` and :func:`initrd_with_payload`.

Needs: a Debian host with apt (for ``apt-get download``), dpkg-deb, ldd and Debian's
/usr/bin/python3.11 (the interpreter is copied into the image, so it must be Debian's build).
"""
from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Union

BUILDER_VERSION = "1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_AGENT_DIR = HERE.parent / "kvmgpu_guest"
INIT_SCRIPT = HERE / "init"

KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
PYTHON = Path("/usr/bin/python3.11")
PY_LIB = Path("/usr/lib/python3.11")
GUEST_SITE = "usr/lib/python3/dist-packages"  # on Debian's sys.path
MODULES = ("virtio_pci", "virtio_console", "virtio_rng")

# Pruned from the stdlib: tests, GUIs, build tooling and things the guest never needs.
STDLIB_SKIP_DIRS = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "__pycache__", "distutils", "venv", "curses", "dbm", "sqlite3", "unittest",
    "config-3.11-x86_64-linux-gnu", "site-packages", "dist-packages",
}
STDLIB_SKIP_FILES = {"sitecustomize.py", "turtle.py", "antigravity.py", "this.py", "EXTERNALLY-MANAGED",
                     "LICENSE.txt", "pydoc.py", "_pydecimal.py", "doctest.py"}
# Extension modules left out (with them go their libraries: libcrypto, libssl, libsqlite3, ncurses, ...).
DYNLOAD_SKIP = re.compile(
    r"^(_test|xxlimited|_xx|_ctypes_test|_curses|_dbm|_gdbm|_sqlite3|_ssl|_hashlib|_tkinter|nis|"
    r"ossaudiodev|audioop|readline|_crypt|_codecs_(cn|hk|jp|kr|tw|iso2022)|_multibytecodec|_lsprof)")

Log = Callable[[str], None]


def _default_log(msg: str) -> None:
    print(f"guest image: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kvmgpu" / "guest-image"


# ----------------------------------------------------------------------------------------------
# newc cpio, written in Python (deterministic: uid/gid 0, fixed mtime)

class Cpio:
    """An in-memory newc ("070701") cpio archive. Paths are relative to the image root."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, bytes]] = {}  # path -> (mode, data)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self._entries:
                self._entries[d] = (stat.S_IFDIR | 0o755, b"")

    def dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        self._parents(path)
        self._entries[path] = (stat.S_IFDIR | mode, b"")

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._parents(path)
        self._entries[path] = (stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self._parents(path)
        self._entries[path] = (stat.S_IFLNK | 0o777, target.encode())

    def __contains__(self, path: str) -> bool:
        return path.strip("/") in self._entries

    def size(self) -> int:
        return sum(len(d) for _, d in self._entries.values())

    def to_bytes(self) -> bytes:
        out = io.BytesIO()

        def entry(name: str, mode: int, data: bytes, ino: int, nlink: int) -> None:
            nb = name.encode() + b"\0"
            hdr = "070701" + "".join(f"{v:08X}" for v in (
                ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0))
            out.write(hdr.encode() + nb)
            out.write(b"\0" * (-(110 + len(nb)) % 4))
            out.write(data)
            out.write(b"\0" * (-len(data) % 4))

        # parents before children: sorted order does that for "a" < "a/b"
        for ino, name in enumerate(sorted(self._entries), start=1):
            mode, data = self._entries[name]
            entry(name, mode, data, ino, 2 if stat.S_ISDIR(mode) else 1)
        entry("TRAILER!!!", 0, b"", 0, 1)
        return out.getvalue()

    def to_gzip(self, level: int = 6) -> bytes:
        raw = self.to_bytes()
        data = gzip.compress(raw, compresslevel=level, mtime=0)
        return data + b"\0" * (-len(data) % 4)


# ----------------------------------------------------------------------------------------------
# the layers

@dataclass
class GuestImage:
    kernel: Path
    initrd: Path
    kernel_version: str
    base_archive: Path
    agent_archive: Path


def _sha(*parts: Union[str, bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def _apt_show(pkg: str) -> dict[str, str]:
    out = _run(["apt-cache", "show", "--no-all-versions", pkg])
    fields: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"^([A-Za-z-]+): (.*)$", line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
    return fields


def _download(pkg: str, debs: Path, log: Log) -> Path:
    """Download the candidate version of pkg into debs (once); returns the .deb path."""
    debs.mkdir(parents=True, exist_ok=True)
    try:
        version = _apt_show(pkg)["Version"]
    except (RuntimeError, KeyError):
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if have:
            return have[-1]
        raise
    fname_ver = version.replace(":", "%3a")
    have = list(debs.glob(f"{pkg}_{fname_ver}_*.deb"))
    if have:
        return have[0]
    log(f"downloading {pkg} {version} ...")
    _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{pkg}={version}"], cwd=debs)
    have = list(debs.glob(f"{pkg}_{fname_ver}_*.deb"))
    if not have:
        raise RuntimeError(f"apt-get download {pkg}={version} left no .deb in {debs}")
    return have[0]


def _unpack(deb: Path, root: Path, log: Log) -> Path:
    dest = root / deb.stem
    if not (dest / ".done").exists():
        log(f"unpacking {deb.name} ...")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
        (dest / ".done").touch()
    return dest


def fetch_kernel(cache: Path, log: Log, package: str = KERNEL_PACKAGE) -> tuple[Path, Path, str]:
    """(vmlinuz, unpacked tree, kernel version). A meta package is followed to its image package."""
    debs = cache / "debs"
    pkg = package
    fields = _apt_show_safe(pkg)
    dep = fields.get("Depends", "").split(",")[0].split("(")[0].strip()
    if not re.search(r"\d+\.\d+", pkg) and dep.startswith("linux-image-"):
        pkg = dep  # the meta package names the versioned image package
    elif not fields:  # no apt metadata (offline): use a kernel downloaded before
        have = sorted(debs.glob("linux-image-[0-9]*.deb"))
        if have:
            pkg = have[-1].name.split("_")[0]
    deb = _download(pkg, debs, log)
    tree = _unpack(deb, cache / "unpacked", log)
    vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise RuntimeError(f"no /boot/vmlinuz-* in {deb}")
    kver = vmlinuz[0].name[len("vmlinuz-"):]
    return vmlinuz[0], tree, kver


def _apt_show_safe(pkg: str) -> dict[str, str]:
    try:
        return _apt_show(pkg)
    except RuntimeError:
        return {}


def _modinfo_depends(ko: Path) -> list[str]:
    data = ko.read_bytes()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if not m or not m.group(1):
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


def _module_order(tree: Path, kver: str, wanted: Iterable[str]) -> list[Path]:
    moddir = tree / "lib" / "modules" / kver
    index = {}
    for ko in moddir.rglob("*.ko"):
        index[ko.stem.replace("-", "_")] = ko
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        ko = index.get(name)
        if ko is None:
            return  # built in
        for dep in _modinfo_depends(ko):
            visit(dep)
        order.append(ko)

    for w in wanted:
        visit(w)
    return order


def _merged(path: str) -> str:
    """Map a path onto the merged-/usr layout the image uses (/lib, /bin, /sbin, /lib64 -> /usr/...)."""
    p = path.lstrip("/")
    for top in ("lib64/", "lib/", "bin/", "sbin/"):
        if p.startswith(top):
            return "usr/" + p
    return p


def _ldd(paths: Iterable[Path]) -> set[str]:
    libs: set[str] = set()
    for p in paths:
        out = _run(["ldd", str(p)])
        for line in out.splitlines():
            line = line.strip()
            m = re.match(r"^\S+ => (/\S+) \(", line) or re.match(r"^(/\S+) \(", line)
            if m:
                libs.add(m.group(1))
    return libs


def _add_host_file(cpio: Cpio, host_path: str) -> None:
    """Add a host file at its merged path, plus a link from the name it was asked by."""
    real = os.path.realpath(host_path)
    dst = _merged(real)
    if dst not in cpio:
        cpio.file(dst, Path(real).read_bytes(), stat.S_IMODE(os.stat(real).st_mode))
    alias = _merged(host_path)
    if alias != dst and alias not in cpio:
        cpio.symlink(alias, "/" + dst)


def _stdlib_files() -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(PY_LIB):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP_DIRS)
        rel = Path(dirpath).relative_to(PY_LIB)
        for f in sorted(filenames):
            if f in STDLIB_SKIP_FILES and rel == Path("."):
                continue
            if f.endswith((".pyc", ".pyo", ".exe", ".whl")):
                continue
            if rel == Path("lib-dynload") and DYNLOAD_SKIP.match(f):
                continue
            files.append(Path(dirpath) / f)
    return files


_PYC_SCRIPT = r"""
import py_compile, sys
src_root, dst_root = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    src = line.rstrip("\n")
    dst = dst_root + src[len(src_root):] + "c"
    try:
        py_compile.compile(src, cfile=dst, dfile=src, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as e:
        print(e, file=sys.stderr)
"""


def _compile_pyc(sources: list[Path], cache: Path, root: Path = PY_LIB) -> dict[Path, bytes]:
    """Byte-code for the stdlib, compiled by the image's own interpreter (unchecked-hash .pyc, so
    the guest never recompiles and never needs a writable __pycache__: Python under TCG is slow)."""
    stage = cache / "pyc-stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    subprocess.run([str(PYTHON), "-c", _PYC_SCRIPT, str(root), str(stage)], check=True,
                   input="".join(f"{p}\n" for p in sources), text=True, stderr=subprocess.DEVNULL)
    out = {}
    for p in sources:
        c = stage / (str(p.relative_to(root)) + "c")
        if c.exists():
            out[p] = c.read_bytes()
    shutil.rmtree(stage, ignore_errors=True)
    return out


def _base_key(kernel_deb: str, busybox_deb: str, stdlib: list[Path], modules: Iterable[str]) -> str:
    st = PYTHON.stat()
    listing = "\n".join(f"{p}:{p.lstat().st_size}:{int(p.lstat().st_mtime)}" for p in stdlib)
    return _sha(BUILDER_VERSION, kernel_deb, busybox_deb, f"{st.st_size}:{int(st.st_mtime)}", listing,
                ",".join(modules), INIT_SCRIPT.read_bytes(), Path(__file__).read_bytes())


def build_base(cache: Path, log: Log, modules: Iterable[str] = MODULES) -> tuple[Path, Path, str]:
    """(base archive, vmlinuz, kernel version)."""
    modules = tuple(modules)
    if not PYTHON.exists():
        raise RuntimeError(f"{PYTHON} not found: the image copies Debian's Python 3.11 from the host")
    vmlinuz, ktree, kver = fetch_kernel(cache, log)
    bb_deb = _download(BUSYBOX_PACKAGE, cache / "debs", log)
    stdlib = _stdlib_files()
    key = _base_key(vmlinuz.parent.parent.name, bb_deb.name, stdlib, modules)
    out = cache / f"base-{key}.cpio.gz"
    if out.exists():
        return out, vmlinuz, kver
    t0 = time.monotonic()
    bb_tree = _unpack(bb_deb, cache / "unpacked", log)
    cpio = Cpio()
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "proc", "sys", "dev", "run", "etc", "root",
              "payload"):
        cpio.dir(d)
    cpio.dir("tmp", 0o1777)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        cpio.symlink(link, target)
    # /dev/console must exist before devtmpfs is mounted, or init runs without stdio
    cpio._entries["dev/console"] = (stat.S_IFCHR | 0o600, b"")  # rdev set below
    log("adding busybox ...")
    bb = bb_tree / "bin" / "busybox"
    cpio.file("usr/bin/busybox", bb.read_bytes(), 0o755)
    applets = _run([str(bb), "--list-full"]).split()
    for a in applets:
        dst = _merged(a)
        if dst not in cpio:
            cpio.symlink(dst, "/usr/bin/busybox")
    log("adding python3.11 and its libraries ...")
    cpio.file("usr/bin/python3.11", PYTHON.read_bytes(), 0o755)
    cpio.symlink("usr/bin/python3", "python3.11")
    dynload = [p for p in stdlib if p.suffix == ".so"]
    for lib in sorted(_ldd([PYTHON, *dynload])):
        _add_host_file(cpio, lib)
    log("byte-compiling the stdlib ...")
    pycs = _compile_pyc([p for p in stdlib if p.suffix == ".py" and not p.is_symlink()], cache)
    for p in stdlib:
        rel = "usr/lib/python3.11/" + str(p.relative_to(PY_LIB))
        if p in pycs:
            cpio.file(str(Path(rel).parent / "__pycache__" / f"{p.stem}.cpython-311.pyc"), pycs[p])
        if p.is_symlink():
            target = os.readlink(p)
            if not target.startswith("/"):
                cpio.symlink(rel, target)
                continue
        cpio.file(rel, p.read_bytes(), 0o755 if p.suffix == ".so" else 0o644)
    cpio.dir(GUEST_SITE)
    log(f"adding kernel modules for {kver}: {', '.join(modules)} ...")
    order = _module_order(ktree, kver, modules)
    for ko in order:
        cpio.file("usr/" + str(ko.relative_to(ktree)), ko.read_bytes())
    cpio.file("etc/kvmgpu/modules", "".join(f"/usr/{ko.relative_to(ktree)}\n" for ko in order).encode())
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")
    cpio.file("etc/profile", b'export PATH=/usr/sbin:/usr/bin:/sbin:/bin PS1="kvmgpu-guest# "\n')
    cpio.file("etc/os-release", b'NAME="kvmgpu test guest"\nID=kvmgpu-guest\n')
    cpio.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    log(f"compressing base layer ({cpio.size() / 2**20:.0f} MiB uncompressed) ...")
    raw = _patch_console(cpio)
    data = gzip.compress(raw, compresslevel=6, mtime=0)
    data += b"\0" * (-len(data) % 4)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(out)
    log(f"base layer {out.name}: {len(data) / 2**20:.1f} MiB in {time.monotonic() - t0:.1f}s")
    return out, vmlinuz, kver


def _patch_console(cpio: Cpio) -> bytes:
    """Serialise, giving dev/console its device number (5, 1)."""
    raw = bytearray(cpio.to_bytes())
    name = b"dev/console\0"
    i = raw.find(name)
    hdr = i - 110
    assert raw[hdr:hdr + 6] == b"070701"
    # fields: magic ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor ...
    raw[hdr + 6 + 8 * 9: hdr + 6 + 8 * 10] = b"%08X" % 5
    raw[hdr + 6 + 8 * 10: hdr + 6 + 8 * 11] = b"%08X" % 1
    return bytes(raw)


def _agent_files(agent_dir: Path) -> list[tuple[str, Path]]:
    """(path in site-packages, file) of the agent's packages: `agent_dir` and its siblings."""
    if not agent_dir.is_dir():
        return []
    dirs = {"kvmgpu_guest": agent_dir, "kvmgpu_wire": agent_dir.parent / "kvmgpu_wire"}
    return sorted((f"{name}/{p.relative_to(d)}", p) for name, d in dirs.items() if d.is_dir()
                  for p in d.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def build_agent(cache: Path, log: Log, agent_dir: Path = DEFAULT_AGENT_DIR) -> Path:
    files = _agent_files(agent_dir)
    key = _sha(BUILDER_VERSION, Path(__file__).read_bytes(), *(rel for rel, _ in files),
               *(p.read_bytes() for _, p in files))
    out = cache / f"agent-{key}.cpio.gz"
    if out.exists():
        return out
    log(f"adding the guest agent from {agent_dir} and its wire package ({len(files)} files) ...")
    cpio = Cpio()
    pycs = _compile_pyc([p for _, p in files if p.suffix == ".py"], cache, root=agent_dir.parent)
    for rel, p in files:
        rel = f"{GUEST_SITE}/{rel}"
        cpio.file(rel, p.read_bytes())
        if p in pycs:
            cpio.file(str(Path(rel).parent / "__pycache__" / f"{p.stem}.cpython-311.pyc"), pycs[p])
    cpio.file("usr/bin/kvmgpu-guest", b'#!/bin/sh\nexec /usr/bin/python3 -m kvmgpu_guest.cli "$@"\n', 0o755)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(cpio.to_gzip())
    tmp.rename(out)
    return out


def build(cache: Path | None = None, agent_dir: Path | None = None, log: Log | None = None,
          modules: Iterable[str] = MODULES) -> GuestImage:
    """Build (or reuse) the image. Safe to call from several processes at once (a lock file)."""
    log = log or _default_log
    cache = Path(cache) if cache else cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base, vmlinuz, kver = build_base(cache, log, modules)
        agent = build_agent(cache, log, Path(agent_dir) if agent_dir else DEFAULT_AGENT_DIR)
        initrd = cache / f"initrd-{base.name.split('-')[1].split('.')[0]}-{agent.name.split('-')[1].split('.')[0]}.img"
        if not initrd.exists():
            tmp = initrd.with_suffix(".tmp")
            tmp.write_bytes(base.read_bytes() + agent.read_bytes())
            tmp.rename(initrd)
            _prune(cache, keep={base.name, agent.name, initrd.name})
    return GuestImage(kernel=vmlinuz, initrd=initrd, kernel_version=kver, base_archive=base, agent_archive=agent)


def _prune(cache: Path, keep: set[str], keep_last: int = 3) -> None:
    """Drop old layers, keeping the newest few of each kind."""
    for prefix in ("base-", "agent-", "initrd-", "cuda-"):
        olds = sorted((p for p in cache.glob(prefix + "*") if p.name not in keep),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for p in olds[keep_last:]:
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# a CUDA C program for the guest (built on the host: the guest has no compiler)

CUDA_PROGRAM = REPO / "tests" / "guest" / "programs" / "vector_add_runtime.cu"


def cuda_program(cache: Path | None = None, log: Log | None = None, source: Path = CUDA_PROGRAM) -> Path | None:
    """`source` built by nvcc to run in the test guest: CUDA's runtime linked static (nvcc's
    default) and so are the C++ library and libgcc (the image has only libc), the kernels as PTX
    (the sim backend reads PTX; a GPU compiles it). Cached by the source's and nvcc's hash. None
    where there is no nvcc (the CUDA toolkit), with the reason logged."""
    log = log or _default_log
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        log("no nvcc here (the CUDA toolkit): the CUDA C program is left out")
        return None
    cache = Path(cache) if cache else cache_root()
    version = _run([nvcc, "--version"]).strip().splitlines()[-1]
    out = cache / f"cuda-{source.stem}-{_sha(BUILDER_VERSION, version, source.read_bytes())}"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    log(f"building {source.name} with {version} ...")
    tmp = out.with_suffix(".tmp")
    subprocess.run([nvcc, "-gencode", "arch=compute_80,code=compute_80", "-o", str(tmp), str(source),
                    "-Xcompiler", "-static-libstdc++,-static-libgcc"], check=True, capture_output=True)
    tmp.rename(out)
    return out


# ----------------------------------------------------------------------------------------------
# per-run payload

def payload_archive(run_sh: str, files: Mapping[str, Union[bytes, str, Path]] | None = None) -> bytes:
    """A gzip'd cpio holding /payload/run.sh and files (paths relative to /payload unless absolute)."""
    cpio = Cpio()
    cpio.file("payload/run.sh", run_sh.encode(), 0o755)
    for name, content in (files or {}).items():
        if isinstance(content, Path):
            mode = 0o755 if os.access(content, os.X_OK) else 0o644
            content = content.read_bytes()
        else:
            mode = 0o755 if name.endswith(".sh") else 0o644
            content = content.encode() if isinstance(content, str) else content
        path = name.lstrip("/") if name.startswith("/") else f"payload/{name}"
        cpio.file(path, content, mode)
    return cpio.to_gzip(level=1)


def initrd_with_payload(image: GuestImage, out: Path, run_sh: str,
                        files: Mapping[str, Union[bytes, str, Path]] | None = None) -> Path:
    """Write image.initrd + payload archive to out (the run's initrd)."""
    out = Path(out)
    with open(out, "wb") as f:
        with open(image.initrd, "rb") as src:
            shutil.copyfileobj(src, f)
        f.write(payload_archive(run_sh, files))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="copy kernel and initrd here (else print cache paths)")
    ap.add_argument("--cache", type=Path, help=f"cache directory (default {cache_root()})")
    ap.add_argument("--agent-dir", type=Path, default=DEFAULT_AGENT_DIR)
    ap.add_argument("--run", metavar="SCRIPT", type=Path,
                    help="also write OUT/initrd-run.img with this shell script as /payload/run.sh")
    args = ap.parse_args(argv)
    img = build(args.cache, args.agent_dir)
    kernel, initrd = img.kernel, img.initrd
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        kernel = args.out / "vmlinuz"
        initrd = args.out / "initrd.img"
        shutil.copyfile(img.kernel, kernel)
        shutil.copyfile(img.initrd, initrd)
        if args.run:
            initrd = initrd_with_payload(img, args.out / "initrd-run.img", args.run.read_text())
    print(f"KERNEL={kernel}")
    print(f"INITRD={initrd}")
    print(f"KERNEL_VERSION={img.kernel_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

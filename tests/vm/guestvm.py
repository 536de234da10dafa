"""Boot the kvmgpu test guest (guest-agent/image) under libvirt, run a payload in it, read its console.

Reusable from any test directory:

    # conftest.py
    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "vm"))  # from tests/<dir>/
    from guestvm import libvirt_conn, guest_image, guest_vm  # noqa: F401  (pytest fixtures)

    @pytest.mark.vm
    def test_something(guest_vm):
        shm = guest_vm.add_shmem()            # /dev/shm/kvmgpu-<name>, <shmem> ivshmem-plain
        sock = guest_vm.add_channel()         # /run/kvmgpu/<name>.sock, virtio port org.kvmgpu.0
        guest_vm.start("echo hi; python3 -c 'print(1)'", files={"x.py": "..."})
        ...                                   # talk to the guest while it runs
        result = guest_vm.wait(timeout=60)    # GuestResult(console, exit_code, boot_s, wall_s)
        assert result.exit_code == 0, result.console

Or without pytest fixtures: ``with GuestVM(conn, image) as vm: vm.run("uname -a")``.

The domain is named ``kvmgpu-vmtest-<uuid8>``, defined from xml-templates/guest-vm.xml.j2 on
qemu:///system, and it is always destroyed and undefined, and its temporary files (run initrd,
kernel copy, console log, shared-memory file, channel socket) removed, on any outcome.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "xml-templates"
sys.path.insert(0, str(REPO / "guest-agent" / "image"))
import build_image  # noqa: E402

URI = os.environ.get("KVMGPU_TEST_URI", "qemu:///system")
# TCG unless asked: KVM in this (nested) environment runs the guest ~100x slower than TCG,
# see docs/guest-image.md. KVMGPU_VM_DOMAIN_TYPE=kvm where KVM works.
DOMAIN_TYPE = os.environ.get("KVMGPU_VM_DOMAIN_TYPE", "qemu")
CHANNEL_DIR = Path("/run/kvmgpu")
EXIT_RE = re.compile(r"KVMGPU-EXIT (\d+)")
INIT_RE = re.compile(r"kvmgpu-guest: init done at ([0-9.]+)s")

FileMap = Mapping[str, Union[bytes, str, Path]]


@dataclass
class GuestResult:
    console: str            # everything the guest printed on its serial console
    exit_code: Optional[int]  # /payload/run.sh's status, None if the guest never got there
    boot_s: Optional[float]   # guest uptime when init finished (kernel + modules)
    wall_s: float             # host wall time from start() to the domain shutting off


def render_domain(**params) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    params.setdefault("uuid", None)
    params.setdefault("cmdline", "")
    params.setdefault("emulator", None)
    params.setdefault("extra_devices", [])
    params.setdefault("domain_type", DOMAIN_TYPE)
    params.setdefault("memory_mib", 512)
    params.setdefault("vcpus", 1)
    return env.get_template("guest-vm.xml.j2").render(**params)


def qemu_user() -> tuple[int, int]:
    """(uid, gid) QEMU runs as under qemu:///system: Debian's libvirt-qemu:kvm, else root."""
    import grp
    import pwd
    try:
        pw = pwd.getpwnam("libvirt-qemu")
    except KeyError:
        return 0, 0
    try:
        return pw.pw_uid, grp.getgrnam("kvm").gr_gid
    except KeyError:
        return pw.pw_uid, pw.pw_gid


def shmem_xml(name: str, size_mib: int = 256) -> str:
    """The element kvmgpu attach adds: an ivshmem-plain device backed by /dev/shm/<name>."""
    return (f"<shmem name='{name}'><model type='ivshmem-plain'/>"
            f"<size unit='M'>{size_mib}</size></shmem>")


def channel_xml(path: Union[str, Path], target: str = "org.kvmgpu.0") -> str:
    """The element kvmgpu attach adds: a virtio-serial port, QEMU listening on a host unix socket."""
    return (f"<channel type='unix'><source mode='bind' path='{path}'/>"
            f"<target type='virtio' name='{target}'/></channel>")


class GuestVM:
    """One throw-away guest. Add devices, start with a payload, wait, read the console; cleanup()
    (or leaving the with-block) always destroys and undefines the domain and removes its files."""

    def __init__(self, conn, image: "build_image.GuestImage", *, domain_type: str = DOMAIN_TYPE,
                 memory_mib: int = 512, vcpus: int = 1, cmdline: str = "", name: Optional[str] = None):
        self.conn = conn
        self.image = image
        self.uuid = str(uuidlib.uuid4())
        self.name = name or f"kvmgpu-vmtest-{self.uuid[:8]}"
        self.domain_type = domain_type
        self.memory_mib = memory_mib
        self.vcpus = vcpus
        self.cmdline = cmdline
        self.extra_devices: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        os.chmod(self.tmp, 0o755)  # QEMU runs as libvirt-qemu and must reach kernel/initrd
        self.console_log = self.tmp / "console.log"
        self.dom = None
        self.xml: Optional[str] = None
        self._cleanup_paths: list[Path] = []
        self._t0: Optional[float] = None
        self._cleaned = False

    # -- before start -------------------------------------------------------------------------
    def add_device(self, xml: str) -> None:
        """Put an XML element (a string) inside the domain's <devices>."""
        self.extra_devices.append(xml)

    def add_shmem(self, name: Optional[str] = None, size_mib: int = 256,
                  initial: bytes = b"") -> Path:
        """Add kvmgpu's ivshmem-plain element; create /dev/shm/<name> (size_mib, sparse) holding
        `initial` at offset 0 before boot. Returns the host path; removed on cleanup."""
        name = name or f"kvmgpu-{self.name}"
        path = Path("/dev/shm") / name
        with open(path, "wb") as f:
            f.truncate(size_mib << 20)
            f.write(initial)
        self._cleanup_paths.append(path)
        # libvirt does not relabel a <shmem> backing file: QEMU (libvirt-qemu) opens it read-write
        # itself, so a file the host creates first must be QEMU's (root:root 0644 -> EACCES).
        uid, gid = qemu_user()
        os.chown(path, uid, gid)
        os.chmod(path, 0o660)
        self.add_device(shmem_xml(name, size_mib))
        return path

    def add_channel(self, path: Optional[Union[str, Path]] = None, target: str = "org.kvmgpu.0") -> Path:
        """Add kvmgpu's virtio-serial channel; QEMU binds the unix socket at `path`
        (default /run/kvmgpu/<name>.sock). Returns the path; removed on cleanup."""
        path = Path(path) if path else CHANNEL_DIR / f"{self.name}.sock"
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._cleanup_paths.append(path)
        self.add_device(channel_xml(path, target))
        return path

    # -- run ----------------------------------------------------------------------------------
    def define(self, run_sh: str, files: Optional[FileMap] = None) -> None:
        """Define the (persistent) domain with /payload/run.sh = run_sh (and files under /payload)
        without starting it, so that e.g. `kvmgpu attach` can add its devices; then `start()`."""
        kernel = self.tmp / "vmlinuz"
        shutil.copyfile(self.image.kernel, kernel)
        initrd = build_image.initrd_with_payload(self.image, self.tmp / "initrd.img", run_sh, files)
        for p in (kernel, initrd):
            os.chmod(p, 0o644)
        self.xml = render_domain(name=self.name, uuid=self.uuid, kernel=kernel, initrd=initrd,
                                 console_log=self.console_log, domain_type=self.domain_type,
                                 memory_mib=self.memory_mib, vcpus=self.vcpus, cmdline=self.cmdline,
                                 extra_devices=self.extra_devices)
        (self.tmp / "domain.xml").write_text(self.xml)
        self.dom = self.conn.defineXML(self.xml)

    def start(self, run_sh: Optional[str] = None, files: Optional[FileMap] = None) -> None:
        """Boot with /payload/run.sh = run_sh (and files under /payload); with no run_sh, boot the
        domain `define()` defined as it is now (with whatever was added to it since)."""
        if run_sh is not None or self.dom is None:
            self.define(run_sh or "", files)
        self._t0 = time.monotonic()
        self.dom.create()

    def is_running(self) -> bool:
        import libvirt
        try:
            return bool(self.dom and self.dom.isActive())
        except libvirt.libvirtError:
            return False

    def console(self) -> str:
        try:
            return self.console_log.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: float = 60) -> GuestResult:
        """Wait for the guest to power off; TimeoutError (with the console so far) if it does not."""
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout}s; console:\n"
                                   + self.console()[-4000:])
            time.sleep(0.1)
        wall = time.monotonic() - (self._t0 or time.monotonic())
        text = self.console()
        m = EXIT_RE.findall(text)
        b = INIT_RE.search(text)
        return GuestResult(console=text, exit_code=int(m[-1]) if m else None,
                           boot_s=float(b.group(1)) if b else None, wall_s=wall)

    def run(self, run_sh: str, files: Optional[FileMap] = None, timeout: float = 60) -> GuestResult:
        self.start(run_sh, files)
        return self.wait(timeout)

    def connect_channel(self, path: Union[str, Path], timeout: float = 20) -> socket.socket:
        """Connect to the unix socket QEMU listens on (retries until it is there)."""
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline or (self.dom is not None and not self.is_running()):
                    raise
                time.sleep(0.1)

    # -- teardown -----------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Destroy and undefine the domain, remove its files. Idempotent."""
        import libvirt
        if self._cleaned:
            return
        self._cleaned = True
        dom = self.dom
        if dom is None:
            try:
                dom = self.conn.lookupByName(self.name)
            except libvirt.libvirtError:
                dom = None
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
            except libvirt.libvirtError:
                pass
            try:
                dom.undefine()
            except libvirt.libvirtError:
                pass
        for p in self._cleanup_paths:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "GuestVM":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


# ---- pytest fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def libvirt_conn():
    """A connection to qemu:///system; the test is skipped (with the reason) when it is unreachable."""
    try:
        import libvirt
    except ImportError as e:
        pytest.skip(f"libvirt-python not importable: {e}")
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as e:
        pytest.skip(f"{URI} unreachable (run `make libvirtd`): {e}")
    yield conn
    try:
        conn.close()
    except Exception:
        pass


@pytest.fixture(scope="session")
def guest_image():
    """The built (cached) guest image: kernel + base initrd with the current guest agent."""
    return build_image.build(log=lambda m: print(f"guest image: {m}", file=sys.stderr, flush=True))


@pytest.fixture
def guest_vm(libvirt_conn, guest_image):
    """A GuestVM, destroyed + undefined + cleaned up after the test whatever happened."""
    vm = GuestVM(libvirt_conn, guest_image)
    try:
        yield vm
    finally:
        vm.cleanup()

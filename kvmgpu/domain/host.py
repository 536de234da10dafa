"""The only module that calls libvirt. The connection is passed in (a test:/// one in fast tests,
qemu:///system in integration tests); libvirt errors become kvmgpu errors here, by error code."""

from __future__ import annotations

import fcntl
import functools
import grp
import importlib.machinery
import importlib.util
import os
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import libvirt

import kvmgpu.data

from ..errors import InvalidInput, KvmgpuError, LibvirtUnavailable, NotFound, PermissionDenied
from ..placement import choose_gpu
from ..vgpu import DEFAULT_COMPUTE, DEFAULT_COMPUTE_MODE, VGpu, channel_path, check_region_size, check_settings
from . import xml

DEFAULT_URI = "qemu:///system"
XML_FLAGS = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE  # keep passwords on redefine
_DENIED = {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_AUTH_UNAVAILABLE,
           libvirt.VIR_ERR_ACCESS_DENIED, libvirt.VIR_ERR_OPERATION_DENIED}
_STATES = {libvirt.VIR_DOMAIN_NOSTATE: "no state", libvirt.VIR_DOMAIN_RUNNING: "running",
           libvirt.VIR_DOMAIN_BLOCKED: "blocked", libvirt.VIR_DOMAIN_PAUSED: "paused",
           libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
           libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended"}


class LibvirtFailed(KvmgpuError):
    """libvirt refused an operation for a reason that is not one of the others."""

    exit_code = 1


@dataclass(frozen=True)
class Change:
    """What attach or detach did. `changed` is False when the domain was left as it was."""
    vm: str
    vgpu: VGpu | None       # the vGPU now (attach) or the one removed (detach)
    previous: VGpu | None   # the vGPU before (attach)
    changed: bool
    running: bool           # the domain runs: the change takes effect at its next boot


def _denied(e: libvirt.libvirtError) -> bool:
    return e.get_error_code() in _DENIED or (
        e.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR and "Permission denied" in (e.get_error_message() or ""))


def _translate(e: libvirt.libvirtError, doing: str) -> KvmgpuError:
    code, msg = e.get_error_code(), e.get_error_message()
    if _denied(e):
        return PermissionDenied(f"libvirt denied {doing}: {msg}",
                                "run as root or as a member of the libvirt group")
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC,
                libvirt.VIR_ERR_INTERNAL_ERROR) and doing.startswith("connecting"):
        return LibvirtUnavailable(f"cannot reach libvirt ({doing}): {msg}",
                                  "start libvirtd (`make libvirtd`) or pass --connect URI")
    if code in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                libvirt.VIR_ERR_INVALID_ARG):
        return InvalidInput(f"libvirt rejected the domain XML ({doing}): {msg}")
    return LibvirtFailed(f"libvirt failed {doing}: {msg}")


def default_uri() -> str:
    return os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


def open_connection(uri: str | None = None) -> libvirt.virConnect:
    """A read-write connection to `uri` (default: LIBVIRT_DEFAULT_URI, then qemu:///system)."""
    uri = uri or default_uri()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        err = _translate(e, f"connecting to {uri}")
        if os.geteuid() != 0 and uri.endswith("/system") and not isinstance(err, PermissionDenied):
            # non-root on the system daemon: the socket's permissions or polkit said no
            raise PermissionDenied(f"cannot use {uri} as an unprivileged user: {e.get_error_message()}",
                                   "run as root (sudo) or as a member of the libvirt group") from None
        if isinstance(err, (PermissionDenied, LibvirtUnavailable)):
            raise err from None
        raise LibvirtUnavailable(f"cannot reach libvirt at {uri}: {e.get_error_message()}",
                                 "start libvirtd (`make libvirtd`) or pass --connect URI") from None


def lookup(conn, vm: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(vm)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(f"there is no VM {vm!r} on {conn.getURI()}",
                           "see `virsh list --all`; pass --connect for another host") from None
        raise _translate(e, f"looking up {vm!r}") from None


def inactive_xml(dom) -> str:
    try:
        return dom.XMLDesc(XML_FLAGS)
    except libvirt.libvirtError as e:
        raise _translate(e, f"reading {dom.name()}'s XML") from None


def state(dom) -> str:
    try:
        return _STATES.get(dom.state()[0], "unknown")
    except libvirt.libvirtError:
        return "unknown"


Unreadable = Callable[[str, KvmgpuError], object]  # told of a domain whose metadata cannot be read


def _unreadable_skipped(vm: str, e: KvmgpuError) -> None:
    """A domain whose kvmgpu metadata cannot be read: left out (`kvmgpu detach` on it cleans it)."""


def list_vgpus(conn, unreadable: Unreadable = _unreadable_skipped) -> list[VGpu]:
    """The vGPUs of every defined domain (from each one's persistent metadata). A domain whose
    metadata cannot be read is left out after `unreadable(vm, error)`."""
    found = []
    try:
        domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
    except libvirt.libvirtError as e:
        raise _translate(e, "listing domains") from None
    for dom in domains:
        try:
            vgpu = xml.read_vgpu(dom.XMLDesc(XML_FLAGS & ~libvirt.VIR_DOMAIN_XML_SECURE))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:  # undefined meanwhile
                continue
            raise _translate(e, "reading domain XML") from None
        except InvalidInput as e:
            unreadable(dom.name(), e)  # `kvmgpu detach` on that VM cleans it
            continue
        if vgpu:
            found.append(vgpu)
    return sorted(found, key=lambda v: v.vm)


def running_vgpus(conn, unreadable: Unreadable = _unreadable_skipped) -> list[VGpu]:
    """The vGPUs the running domains run with now (each one's live XML: what its worker serves,
    whatever was changed for its next boot). A domain whose metadata cannot be read is left out
    after `unreadable(vm, error)`."""
    found = []
    try:
        domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    except libvirt.libvirtError as e:
        raise _translate(e, "listing running domains") from None
    for dom in domains:
        vgpu = _live_vgpu(dom, unreadable)
        if vgpu:
            found.append(vgpu)
    return sorted(found, key=lambda v: v.vm)


def _live_vgpu(dom, unreadable: Unreadable) -> VGpu | None:
    """The vGPU in running `dom`'s live XML; None when it has none or stopped meanwhile."""
    try:
        return xml.read_vgpu(dom.XMLDesc(0))
    except libvirt.libvirtError as e:
        if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
            return None                # undefined or stopped meanwhile
        raise _translate(e, "reading a running domain's XML") from None
    except InvalidInput as e:
        unreadable(dom.name(), e)
        return None


def running_vgpu(conn, vm: str, unreadable: Unreadable = _unreadable_skipped) -> VGpu | None:
    """`vm`'s vGPU if `vm` runs and has one (from its live XML), else None."""
    try:
        dom = conn.lookupByName(vm)
        if not dom.isActive():
            return None
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise _translate(e, f"looking up {vm!r}") from None
    return _live_vgpu(dom, unreadable)


def stopped_vgpu_vms(conn) -> list[str]:
    """Names of the defined domains that have a vGPU (readable or not) and do not run."""
    try:
        domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)
    except libvirt.libvirtError as e:
        raise _translate(e, "listing stopped domains") from None
    names = []
    for dom in domains:
        try:
            if xml.read_vgpu(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) is not None:
                names.append(dom.name())
        except (libvirt.libvirtError, KvmgpuError):
            continue
    return names


def is_active(conn, vm: str) -> bool:
    """Whether domain `vm` runs now (False when libvirt has no such domain)."""
    try:
        return bool(conn.lookupByName(vm).isActive())
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise _translate(e, f"asking whether {vm!r} runs") from None


def live_has_vgpu(dom) -> bool:
    """Whether the running domain has kvmgpu's devices (False: they come at its next boot)."""
    try:
        return bool(xml.find_channel(xml.parse(dom.XMLDesc(0))))
    except libvirt.libvirtError:
        return False


def _define(conn, text: str, doing: str):
    try:
        return conn.defineXML(text)
    except libvirt.libvirtError as e:
        raise _translate(e, doing) from None


@functools.cache
def _hook():
    """The libvirt hook (kvmgpu/data/qemu-hook) as a module: it holds the one definition of the
    channel directory's group, and it must stand alone (system python3, no kvmgpu)."""
    path = Path(kvmgpu.data.__file__).with_name("qemu-hook")
    loader = importlib.machinery.SourceFileLoader("kvmgpu_qemu_hook", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def channel_group(config, qemu_conf: str | None = None) -> str:
    """The channel directory's group, as the libvirt hook decides it: `qemu_group` when set, else
    qemu.conf's `group =`, else libvirt-qemu."""
    hook = _hook()
    return hook.channel_group(config.qemu_group, qemu_conf or hook.QEMU_CONF)


def prepare_channel_dir(config) -> None:
    """Create the channel directory QEMU binds sockets in: root:<channel_group>, mode 2770
    (setgid, so sockets keep the group), as the libvirt hook does; QEMU binds there and the
    worker connects."""
    path = config.channel_dir
    try:
        os.makedirs(path, exist_ok=True)
        st = os.stat(path)
        if st.st_uid == os.getuid() == 0:
            group = channel_group(config)
            try:
                gid = int(group.lstrip("+")) if group.lstrip("+").isdigit() else grp.getgrnam(group).gr_gid
            except KeyError:
                gid = st.st_gid
            if st.st_gid != gid:
                os.chown(path, 0, gid)
            os.chmod(path, 0o2770)
    except PermissionError as e:
        raise PermissionDenied(f"cannot create the channel directory {path}: {e.strerror}",
                               "run as root, or create it writable by QEMU's group") from None


@contextmanager
def _placement_lock(config):
    """Serialise attaches on this host, so two cannot promise the same memory."""
    try:
        os.makedirs(config.state_dir, exist_ok=True)
        fd = os.open(os.path.join(config.state_dir, "attach.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError as e:
        raise PermissionDenied(f"cannot open the lock in {config.state_dir}: {e.strerror}",
                               "run as root") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def attach(conn, config, gpus, vm: str, gmem: int | None, compute: int | None = None,
           compute_mode: str | None = None, gpu: int | None = None, region_size: int | None = None) -> Change:
    """Give `vm` a vGPU (or update its vGPU, keeping its id) in the domain's persistent config.

    `gpus` is the host's inventory; `gpu` an index or None for auto placement (the GPU it has, if
    it still fits). A setting given as None keeps what the VM's vGPU has (its memory quota, compute
    share and mode, region size): a re-attach changes only what it names. A new vGPU needs `gmem`
    and gets compute 100, mode share and the configured region size. Nothing is defined when the
    result would be the domain as it was. Raises before touching the domain for bad settings, bad
    names, unknown VMs and no room."""
    xml.check_vm_name(vm)
    if region_size is not None:
        check_region_size(region_size)
    check_settings(1 if gmem is None else gmem, DEFAULT_COMPUTE if compute is None else compute,
                   DEFAULT_COMPUTE_MODE if compute_mode is None else compute_mode)
    path = channel_path(config, vm)
    if len(path.encode()) > 107:
        raise InvalidInput(f"the channel socket path {path} is longer than a unix socket allows (107 bytes)",
                           "use a shorter VM name or channel_dir")
    if not gpus:
        raise NotFound("there are no GPUs on this host",
                       "for a development host without GPUs, set KVMGPU_SIM_GPUS=2x80G "
                       "(or sim_gpus in /etc/kvmgpu/kvmgpu.toml)")
    with _placement_lock(config):
        dom = lookup(conn, vm)
        if not dom.isPersistent():
            raise InvalidInput(f"VM {vm!r} is transient; kvmgpu edits defined domains only",
                               "define it (`virsh define`) first")
        original = inactive_xml(dom)
        root = xml.parse(original)
        current = xml.read_vgpu(root)
        if gmem is None:
            if current is None:
                raise InvalidInput(f"VM {vm!r} has no vGPU yet: a new vGPU needs a memory quota",
                                   "give --gmem, e.g. --gmem 8G")
            gmem = current.gmem
        if compute is None:
            compute = current.compute if current else DEFAULT_COMPUTE
        if compute_mode is None:
            compute_mode = current.compute_mode if current else DEFAULT_COMPUTE_MODE
        others = [v for v in list_vgpus(conn) if v.vm != vm]
        chosen = choose_gpu(gpus, others + ([current] if current else []), gmem,
                            config.context_overhead, want=gpu, vm=vm, live=running_vgpus(conn))
        vgpu = VGpu(id=current.id if current else str(uuid.uuid4()), vm=vm, gpu=chosen.index,
                    gpu_uuid=chosen.uuid, gmem=gmem, compute=compute, compute_mode=compute_mode,
                    region_size=region_size if region_size is not None
                    else current.region_size if current else config.region_size)
        before = xml.controllers(root)
        xml.apply_vgpu(root, vgpu, path)
        running = bool(dom.isActive())
        if xml.to_string(root) == xml.to_string(xml.parse(original)):
            return Change(vm, vgpu, current, changed=False, running=running)
        prepare_channel_dir(config)
        dom = _define(conn, xml.to_string(root), f"defining {vm!r}")
        after = xml.parse(inactive_xml(dom))
        new = tuple(sorted(xml.controllers(after) - before, key=lambda c: (c.type, c.index)))
        if new:
            xml.apply_vgpu(after, vgpu, path, added=xml.added_controllers(after) + new)
            try:
                _define(conn, xml.to_string(after), f"recording {vm!r}'s added controllers")
            except KvmgpuError:
                _define(conn, original, f"restoring {vm!r}")
                raise
        return Change(vm, vgpu, current, changed=True, running=running)


def detach(conn, vm: str) -> Change:
    """Take `vm`'s vGPU out of its persistent config: exactly what attach added."""
    xml.check_vm_name(vm)
    dom = lookup(conn, vm)
    original = inactive_xml(dom)
    root = xml.parse(original)
    try:
        current = xml.read_vgpu(root)
    except InvalidInput:
        current = None
    running = bool(dom.isActive())
    if not xml.remove_vgpu(root):
        return Change(vm, None, None, changed=False, running=running)
    _define(conn, xml.to_string(root), f"defining {vm!r}")
    return Change(vm, current, current, changed=True, running=running)

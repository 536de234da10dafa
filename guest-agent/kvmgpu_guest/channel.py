"""Guest transports: the control channel and the shared region, found where the guest runs.

Loopback (tests, benchmarks, a host with no VM): a unix socket and a shared file, named by
`KVMGPU_SOCKET` / `KVMGPU_SHM` (or passed in). In a VM: the guest agent's socket when the agent
runs (it shares the VM's one channel among processes and hands over the region's fd), else the
virtio-serial port `org.kvmgpu.0` and the ivshmem-plain PCI device's BAR2 opened directly. A
transport has `send(bytes)`, `recv(max) -> bytes` (b"" at end of stream) and `close()`; nothing else
here knows the protocol.
"""

from __future__ import annotations

import errno
import glob
import os
import select
import socket

from kvmgpu_wire.region import Region, RegionError

PORT_NAME = "org.kvmgpu.0"
PORT_PATH = "/dev/virtio-ports/" + PORT_NAME
IVSHMEM_VENDOR = 0x1AF4
IVSHMEM_DEVICE = 0x1110
SOCKET_ENV = "KVMGPU_SOCKET"
SHM_ENV = "KVMGPU_SHM"
AGENT_SOCKET = "/run/kvmgpu-guest/agent.sock"  # kvmgpu_guest.agent.AGENT_SOCKET


class ChannelError(Exception):
    """No channel or region could be opened. The message names what was looked for."""


class UnixTransport:
    """A unix socket: the worker's (loopback mode) or the guest agent's."""

    shared = False  # whether other sessions share the region (then a session asks for a part)

    def __init__(self, path: str, sock: socket.socket | None = None):
        self.path = path
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError as e:
                sock.close()
                raise ChannelError(f"cannot connect to {path}: {e.strerror}") from None
        self._sock = sock
        self.send = self._sock.sendall
        self.recv = self._sock.recv
        self._poll_buf: bytearray | None = None
        self._poll = select.poll()  # cheaper to ask than a recv that raises when empty (docs/performance.md)
        self._poll.register(sock, select.POLLIN)

    def recv_nowait(self, max_bytes: int):
        """What is there to read now (b"" at end of stream), or None: for a short busy-poll."""
        if not self._poll.poll(0):
            return None
        buf = self._poll_buf
        if buf is None or len(buf) < max_bytes:
            buf = self._poll_buf = bytearray(max_bytes)
        try:
            n = self._sock.recv_into(buf, max_bytes, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        return bytes(buf[:n])

    def close(self) -> None:
        self._sock.close()

    def __repr__(self):
        return f"UnixTransport({self.path!r})"


class PortTransport:
    """A virtio-serial port (a character device), read and written with plain os calls."""

    shared = False

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise ChannelError(f"cannot open {path}: {e.strerror}") from None

    def send(self, data) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def recv(self, max_bytes: int) -> bytes:
        while True:
            try:
                return os.read(self._fd, max_bytes)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    continue
                raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self):
        return f"PortTransport({self.path!r})"


# ------------------------------------------------------------------------------------- discovery

def find_port(sys_root: str = "/sys", dev_root: str = "/dev") -> str | None:
    """The virtio-serial port's device node: the udev link, else the vportNpM whose name matches."""
    link = os.path.join(dev_root, "virtio-ports", PORT_NAME)
    if os.path.exists(link):
        return link
    for name_file in sorted(glob.glob(os.path.join(sys_root, "class/virtio-ports/*/name"))):
        try:
            with open(name_file) as f:
                if f.read().strip() == PORT_NAME:
                    node = os.path.join(dev_root, os.path.basename(os.path.dirname(name_file)))
                    if os.path.exists(node):
                        return node
        except OSError:
            continue
    return None


def find_ivshmem(sys_root: str = "/sys") -> str | None:
    """The sysfs directory of the first ivshmem-plain PCI device (1af4:1110)."""
    try:
        import pyudev  # optional
    except ImportError:
        pyudev = None
    if pyudev is not None and sys_root == "/sys":
        try:
            ctx = pyudev.Context()
            for dev in ctx.list_devices(subsystem="pci"):
                if (dev.attributes.get("vendor") or b"").strip() == b"0x1af4" and \
                        (dev.attributes.get("device") or b"").strip() == b"0x1110":
                    return dev.sys_path
        except Exception:  # udev unusable: fall back to sysfs
            pass
    for dev in sorted(glob.glob(os.path.join(sys_root, "bus/pci/devices/*"))):
        try:
            with open(os.path.join(dev, "vendor")) as f:
                vendor = int(f.read().strip(), 16)
            with open(os.path.join(dev, "device")) as f:
                device = int(f.read().strip(), 16)
        except (OSError, ValueError):
            continue
        if vendor == IVSHMEM_VENDOR and device == IVSHMEM_DEVICE:
            return dev
    return None


def find_channel(socket_path: str | None = None, shm_path: str | None = None,
                 sys_root: str = "/sys", dev_root: str = "/dev", agent_socket: str = AGENT_SOCKET):
    """(transport, region) for this guest: loopback when a socket is named, else the guest agent
    where its socket exists, else the VM devices. (Session.connect passes the GuestConfig's.)"""
    if socket_path:
        if not shm_path:
            raise ChannelError(f"a control socket is named ({socket_path}) but no shared region "
                               f"(set {SHM_ENV} or pass --shm)")
        return _region_and_transport(lambda: Region.open_file(shm_path),
                                     lambda: UnixTransport(socket_path))
    if os.path.exists(agent_socket):
        return _via_agent(agent_socket)
    port = find_port(sys_root, dev_root)
    pci = find_ivshmem(sys_root)
    if port is None or pci is None:
        missing = []
        if port is None:
            missing.append(f"virtio-serial port {PORT_NAME} ({PORT_PATH} or "
                           f"{sys_root}/class/virtio-ports/*/name)")
        if pci is None:
            missing.append(f"ivshmem-plain PCI device {IVSHMEM_VENDOR:04x}:{IVSHMEM_DEVICE:04x} "
                           f"(in {sys_root}/bus/pci/devices)")
        raise ChannelError("no vGPU found: missing " + " and ".join(missing) +
                           f" (and no guest agent at {agent_socket})"
                           f"; outside a VM set {SOCKET_ENV} and {SHM_ENV}")
    return _region_and_transport(lambda: Region.open_pci(pci), lambda: PortTransport(port))


def _via_agent(path: str):
    from .agent import connect
    try:
        sock, fd, size = connect(path)
    except OSError as e:
        raise ChannelError(f"cannot use the guest agent at {path}: {e.strerror or e}") from None
    try:
        region = Region(fd, size, f"{path} (agent)")
    except (OSError, ValueError) as e:
        sock.close()
        raise ChannelError(f"cannot map the region the guest agent handed over: {e}") from None
    finally:
        os.close(fd)
    transport = UnixTransport(path, sock)
    transport.shared = True  # other processes use the same region: ask for part of it
    return transport, region


def _region_and_transport(open_region, open_transport):
    """(transport, region): the region mapped first, closed again if the transport fails."""
    try:
        region = open_region()
    except RegionError as e:
        raise ChannelError(str(e)) from None
    try:
        return open_transport(), region
    except ChannelError:
        region.close()
        raise

"""The guest agent: lets several processes in one VM share its one vGPU channel.

A VM has one virtio-serial port and one shared region. The agent owns both. Each CUDA process in
the guest connects to the agent's unix socket; on connect the agent passes it the region's file
descriptor (SCM_RIGHTS) and its size, then relays frames both ways. Every process numbers its own
session 1; the agent gives each connection a session id that is unique on the channel and rewrites
the header's session field on the way through, so the host sees distinct sessions (each with its own
window of the region, handles and queued-error state) while the memory quota stays the VM's.
When a process goes away the agent says GOODBYE for it, so the host releases what it held.

The agent reads only frame headers; the host validates everything else.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import struct
import time

from kvmgpu_wire import protocol as p
from kvmgpu_wire.ops import AGENT_REGION_INFO_FORMAT

log = logging.getLogger("kvmgpu-guest.agent")

AGENT_SOCKET = "/run/kvmgpu-guest/agent.sock"
_REGION_INFO = struct.Struct(AGENT_REGION_INFO_FORMAT)  # sent with the fd: the region's size in bytes
_MAX_SESSIONS = 0xFFFF


class FrameSplitter:
    """Cuts a byte stream into whole frames using only the header; bounds every frame."""

    def __init__(self, limit: int):
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytearray]:
        self._buf += data
        frames = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= p.HEADER_SIZE:
            magic, _kind, _flags, _session, _seq, length = p.HEADER.unpack_from(buf, pos)
            if magic != p.MAGIC or length > self.limit:
                raise p.RemoteProtocolError(f"bad frame (magic 0x{magic:04x}, length {length})")
            end = pos + p.HEADER_SIZE + length
            if len(buf) < end:
                break
            frames.append(buf[pos:end])
            pos = end
        del buf[:pos]
        return frames


def set_session(frame: bytearray, session: int) -> bytearray:
    struct.pack_into("<I", frame, 4, session)  # magic u16, kind u8, flags u8, then session u32
    return frame


def frame_session(frame: bytearray) -> int:
    return struct.unpack_from("<I", frame, 4)[0]


class _Client:
    def __init__(self, sock: socket.socket, session: int, limit: int):
        self.sock = sock
        self.session = session  # on the channel
        self.own_session: int | None = None  # the number the process uses itself
        self.splitter = FrameSplitter(limit)


class Agent:
    """Relays frames between local processes and the channel to the host."""

    def __init__(self, channel_fd: int, region_fd: int, region_size: int,
                 socket_path: str = AGENT_SOCKET):
        self.channel_fd = channel_fd
        self.region_fd = region_fd
        self.region_size = region_size
        self.socket_path = socket_path
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}  # channel session -> client
        self.next_session = 1
        self.channel_in = FrameSplitter(max(p.HANDSHAKE_MAX, 1 << 20))
        self.running = True

    # --- setup -----------------------------------------------------------------------------------

    def listen(self) -> socket.socket:
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.socket_path)
        os.chmod(self.socket_path, 0o666)  # any guest user may use the VM's vGPU
        srv.listen(64)
        srv.setblocking(False)
        self.sel.register(srv, selectors.EVENT_READ, "listen")
        self.sel.register(self.channel_fd, selectors.EVENT_READ, "channel")
        return srv

    def serve_forever(self) -> None:
        srv = self.listen()
        log.info("agent: serving %s (region %d bytes)", self.socket_path, self.region_size)
        try:
            while self.running:
                for key, _ in self.sel.select(timeout=1.0):
                    if key.data == "listen":
                        self._accept(srv)
                    elif key.data == "channel":
                        self._from_channel()
                    else:
                        self._from_client(key.data)
        finally:
            for c in list(self.clients.values()):
                self._drop(c, "agent stopping")
            srv.close()
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    # --- relaying --------------------------------------------------------------------------------

    def _accept(self, srv: socket.socket) -> None:
        sock, _ = srv.accept()
        session = self._free_session()
        if session is None:
            sock.close()
            log.warning("agent: no free session ids; refused a process")
            return
        client = _Client(sock, session, max(p.HANDSHAKE_MAX, 1 << 20))
        try:
            socket.send_fds(sock, [_REGION_INFO.pack(self.region_size)], [self.region_fd])
        except OSError:
            sock.close()
            return
        self.clients[session] = client
        self.sel.register(sock, selectors.EVENT_READ, client)

    def _free_session(self):
        for _ in range(_MAX_SESSIONS):
            s = self.next_session
            self.next_session = self.next_session % _MAX_SESSIONS + 1
            if s not in self.clients:
                return s
        return None

    def _from_client(self, client: _Client) -> None:
        try:
            data = client.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._drop(client, "process exited")
            return
        try:
            frames = client.splitter.feed(data)
        except p.RemoteProtocolError as e:
            self._drop(client, f"malformed frame from process: {e}")
            return
        out = bytearray()
        for f in frames:
            # the number the process gives its session: the one it said HELLO with, then the
            # channel's, once the WELCOME told it (it posts to its mailbox with that number)
            client.own_session = frame_session(f)
            out += set_session(f, client.session)
        if out:
            self._write_channel(bytes(out))

    def _from_channel(self) -> None:
        try:
            data = os.read(self.channel_fd, 1 << 20)
        except OSError as e:
            data = b""
            log.warning("agent: reading the channel failed: %s", e)
        if not data:
            # virtio-serial reads 0 (and polls readable) while the host end is closed: before the
            # host's worker connects, and after it went away. Sessions the host has seen are gone
            # with it: tell their processes (their sockets close: "the host closed the channel")
            # instead of leaving them waiting for replies forever. Then wait instead of spinning.
            self._host_gone("the host closed the channel")
            time.sleep(0.05)
            return
        for f in self.channel_in.feed(data):
            client = self.clients.get(frame_session(f))
            if client is None:
                continue  # a reply for a process that has gone
            set_session(f, client.own_session or 1)
            try:
                client.sock.sendall(f)
            except OSError:
                self._drop(client, "process unreachable")

    def _host_gone(self, why: str) -> None:
        """The host end closed: drop every process that has sent it something (no GOODBYE: the
        host's sessions ended with it) and forget any partial frame."""
        gone = [c for c in self.clients.values() if c.own_session is not None]
        for c in gone:
            self.clients.pop(c.session, None)
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
        if gone:
            log.warning("agent: %s; ended %d process session(s)", why, len(gone))
        self.channel_in = FrameSplitter(self.channel_in.limit)

    def _drop(self, client: _Client, why: str) -> None:
        if self.clients.pop(client.session, None) is None:
            return
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        bye = p.HEADER.pack(p.MAGIC, p.Kind.GOODBYE, 0, client.session, 0, len(why.encode())) + why.encode()
        self._write_channel(bye)

    def _write_channel(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.channel_fd, view)
                view = view[n:]
        except OSError as e:  # a socket channel (tests) whose host end is gone: EPIPE
            self._host_gone(f"writing the channel failed: {e}")


def connect(socket_path: str = AGENT_SOCKET) -> tuple[socket.socket, int, int]:
    """A process's side: (socket speaking the kvmgpu protocol, region fd, region size)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    msg, fds, _flags, _addr = socket.recv_fds(sock, _REGION_INFO.size, 1)
    if len(msg) != _REGION_INFO.size or len(fds) != 1:
        sock.close()
        raise OSError(f"the kvmgpu guest agent at {socket_path} did not hand over the shared region")
    return sock, fds[0], _REGION_INFO.unpack(msg)[0]


def run_agent(channel_path: str, region_path: str, socket_path: str = AGENT_SOCKET) -> None:
    """Open the channel and the region, then serve until SIGTERM/SIGINT."""
    channel_fd = os.open(channel_path, os.O_RDWR)
    region_fd = os.open(region_path, os.O_RDWR)
    size = os.fstat(region_fd).st_size
    agent = Agent(channel_fd, region_fd, size, socket_path)

    def stop(*_):
        agent.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.serve_forever()

"""The worker process: one vGPU served on one channel socket, in a single-threaded event loop.

If the socket path is a socket someone listens on (QEMU bound it for the VM's channel), the
worker connects to it and exits when it closes: the VM stopped. Otherwise it creates the socket
and listens (loopback mode: tests, benchmarks, demos), serving up to `max_channels` connections
that all share the one vGPU and its quota, and removes its socket and region when it stops.
SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import resource
import select as select_mod
import selectors
import signal
import socket
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmgpu_wire.mailbox import REPLY_MAX, fence
from kvmgpu_wire.protocol import DEFAULT_MAX_FRAME, WINDOW_ALIGN, Connection, Goodbye, RemoteProtocolError, Role
from kvmgpu_wire.region import Region, RegionError
from kvmgpu_wire.trace import ON as _TRACE, mark as _mark, side as _trace_side

from ..backend import get_backend
from ..errors import InvalidInput, KvmgpuError
from .channel import Channel
from .vgpu import VGpu

log = logging.getLogger("kvmgpu.worker")

MAX_UNSENT = 64 << 20  # a peer that lets this much of its replies pile up is dropped
READ_SIZE = 1 << 16  # under glibc's mmap threshold: a larger recv() buffer costs an mmap per call
STATS_INTERVAL = 1.0
RESTART_ENV = "KVMGPU_WORKER_RESTARTED"  # what a re-executed worker takes over (JSON; see _reexec)
IDLE_S = 0.002  # no message for this long while holding the GPU: let the other VMs have it
# After a message is handled (its replies written), keep polling the sockets (non-blocking) this
# long before blocking in select(): a reply-waiting guest's next call then finds the worker awake
# (no scheduler wake-up on the round trip), at the cost of up to this much CPU after each burst.
# 0 turns it off. The window starts after the handling: counted from the request, a call that
# waited for the GPU left too little of it for the guest's next call and the worker slept.
# The sessions' mailboxes are looked at on every spin (a load each), and once more before blocking.
POLL_US = 50
POLL_ENV = "KVMGPU_WORKER_POLL_US"
# Loopback mode: connections served at once. Past it a new connection gets a GOODBYE naming the
# limit and is closed. Each connection costs a file descriptor; the limit is also kept FD_SPARE
# under the process's descriptor limit (RLIMIT_NOFILE), for the region, the stats file, the
# driver's own and the spare one that sheds a connection when descriptors run out anyway.
MAX_CHANNELS = 256
FD_SPARE = 64
ACCEPT_PAUSE_S = 0.1  # no descriptor even to shed a connection with: stop accepting this long
LOCK_SUFFIX = ".lock"  # next to a loopback worker's socket, locked while it listens
SUN_PATH_MAX = 107  # the longest path a unix socket can be bound or connected to (sun_path, less its NUL)


class Stop(BaseException):
    """SIGTERM/SIGINT: leave the loop and release everything."""


@dataclass
class WorkerConfig:
    backend: str
    gmem: int
    socket: str
    shm: str
    region_size: int = 64 << 20
    vm: str = ""
    gpu: int = 0
    compute: int = 100
    compute_mode: str = "share"
    stats_file: str | None = None
    max_frame: int = DEFAULT_MAX_FRAME
    max_channels: int = MAX_CHANNELS
    connect: bool = False  # the VM's channel only: connect to QEMU's socket, never listen (the daemon's workers)
    poll_us: int = field(default_factory=lambda: int(os.environ.get(POLL_ENV) or POLL_US))

    def check(self) -> None:
        if self.backend not in ("sim", "cuda"):
            raise InvalidInput(f"unknown backend {self.backend!r}", "use sim or cuda")
        if not 1 <= self.compute <= 100:
            raise InvalidInput(f"compute share {self.compute}% is not between 1 and 100")
        if self.compute_mode not in ("share", "limit"):
            raise InvalidInput(f"compute mode {self.compute_mode!r}", "use share or limit")
        if self.gpu < 0:
            raise InvalidInput(f"GPU index {self.gpu} is negative")
        n = len(os.fsencode(self.socket))
        if n > SUN_PATH_MAX:
            raise InvalidInput(f"socket path {self.socket} is {n} bytes, over the {SUN_PATH_MAX}-byte "
                               "limit of a unix socket's path", "give --socket a shorter path")
        if self.max_channels < 1:
            raise InvalidInput(f"--max-channels {self.max_channels} is under 1")
        if self.region_size < WINDOW_ALIGN:
            raise InvalidInput(f"region size {self.region_size} is under one page ({WINDOW_ALIGN})")


class _Peer:
    def __init__(self, sock: socket.socket, channel: Channel):
        self.sock = sock
        self.channel = channel
        self.unsent = bytearray()
        self.rbuf = bytearray(READ_SIZE)  # recv_into this: no allocation per read
        self.rview = memoryview(self.rbuf)
        self.events = selectors.EVENT_READ


class Worker:
    """The process: region, vGPU, socket, loop. `stats()` is what the daemon reads."""

    def __init__(self, config: WorkerConfig):
        config.check()
        self.config = config
        self._created: list[str] = []  # paths this worker made and removes on exit
        self._lock_fd = -1  # loopback: <socket>.lock, locked while this worker listens
        self._inherited = json.loads(os.environ.pop(RESTART_ENV, "") or "{}")  # after a re-exec
        self._restart = False  # set after a sticky error once no session is left: re-execute
        self._region = self._open_region()
        try:
            opts = {"gpu": config.gpu, "total_memory": config.gmem}
            self.vgpu = VGpu(lambda: get_backend(config.backend, **opts), config.gmem, self._region,
                             vm=config.vm, compute=config.compute, compute_mode=config.compute_mode)
            self.vgpu.on_broken_idle = self._want_restart
            # The compute quota: this VM's turn on the GPU. KVMGPU_COMPUTE_GATE=0 turns it off
            # (to measure what the gate costs; never in production: the VM is then uncapped).
            if config.backend == "cuda" and os.environ.get("KVMGPU_COMPUTE_GATE", "1") != "0":
                from ..compute import open_gate
                self.vgpu.attach_gate(open_gate(lambda: self.vgpu.backend, config.gpu, config.compute,
                                                config.compute_mode))
        except BaseException:
            self._release_files()
            raise
        self._peers: dict[int, _Peer] = {}
        self._next_cid = 1
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._connected = False
        self._stats_written = 0.0
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        fds = soft - FD_SPARE if soft != resource.RLIM_INFINITY else config.max_channels
        self.max_channels = max(1, min(config.max_channels, fds))
        self.channels_refused = 0
        self.mailbox_posts = 0  # synchronous calls (with the batch before them) taken from a mailbox
        self._refused_logged = 0.0
        self._spare_fd = -1  # closed to accept (and close) a connection when descriptors run out
        self._accept_paused_until = 0.0
        if _TRACE:
            _trace_side("worker")

    # --- set-up ----------------------------------------------------------------------------------
    def _open_region(self) -> Region:
        path = self.config.shm
        try:
            if os.path.exists(path):
                if path in self._inherited.get("created", ()):
                    self._created.append(path)  # made by this worker before it re-executed
                return Region.open_file(path, reserve=True)  # QEMU's (a VM), or a worker's before
            region = Region.open_file(path, self.config.region_size, create=True)
            self._created.append(path)
            return region
        except RegionError as e:
            raise KvmgpuError(str(e), e.hint or "check --shm and its permissions") from None

    def _open_socket(self) -> None:
        path = self.config.socket
        fd = self._inherited.get("listen_fd")
        if fd is not None:  # still listening from before the re-exec: connections waited in its backlog
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            self._created.append(path)
            self._lock(path)
            self._listen(sock, path)
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is None and self.config.connect:
            raise KvmgpuError(f"the VM's channel {path} does not exist: QEMU has not bound it",
                              "start the VM first (--connect never listens itself)")
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise InvalidInput(f"{path} exists and is not a socket", "give --socket a free path")
            pid = _worker_listening(path)
            if pid is not None:
                who = f"a kvmgpu worker (pid {pid})" if pid else "a kvmgpu worker"
                raise KvmgpuError(f"{who} already listens on {path}: it is not a VM's channel",
                                  "stop that worker, or give this one another --socket")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError as e:
                sock.close()
                if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                    raise KvmgpuError(f"cannot connect to {path}: {e.strerror or e}") from None
                if self.config.connect:  # QEMU's socket, but QEMU is gone: not ours to replace
                    raise KvmgpuError(f"nobody listens on the VM's channel {path}: "
                                      f"{e.strerror or e}", "is the VM running? (--connect never "
                                      "listens itself)") from None
                os.unlink(path)  # a stale socket nobody listens on
            else:
                self._connected = True
                log.info("connected to the VM's channel %s", path)
                self._add_peer(sock)
                return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            raise KvmgpuError(f"cannot create socket {path}: {e.strerror or e}") from None
        self._created.append(path)
        self._lock(path)
        sock.listen(16)
        self._listen(sock, path)

    def _lock(self, path: str) -> None:
        """Hold `<socket>.lock` while listening, with this worker's pid in it: a second worker
        started on the same socket finds it locked and refuses, instead of connecting to this
        one as if it were QEMU (`_worker_listening`)."""
        lock = path + LOCK_SUFFIX
        self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise KvmgpuError(f"another kvmgpu worker holds {lock}", "give --socket another path") from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        self._created.append(lock)

    def _listen(self, sock: socket.socket, path: str) -> None:
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # In loopback mode the region is this worker's to remove on exit, also one it found (a
        # worker before it was killed and left it); a VM's region is QEMU's (the daemon removes it)
        if self.config.shm not in self._created:
            self._created.append(self.config.shm)
        log.info("listening on %s (loopback mode, at most %d connections)", path, self.max_channels)

    def _add_peer(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        cid = self._next_cid
        self._next_cid += 1
        peer = _Peer(sock, Channel(self.vgpu, cid, self.config.max_frame))
        self._peers[cid] = peer
        self._sel.register(sock, selectors.EVENT_READ, cid)

    # --- loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        def stop(signum, frame):
            raise Stop()

        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._open_socket()
            c = self.config
            log.info("vm %s: serving a %d-byte vGPU on the %s backend (region %s, %d bytes)",
                     c.vm or "-", c.gmem, c.backend, c.shm, self._region.size)
            self.write_stats()
            poll_s = max(0, c.poll_us) / 1e6
            clock = time.perf_counter
            poll_until = 0.0
            select = self._sel.select
            hot: int | None = None  # the channel served last: while polling, read it directly
            hot_polled: int | None = None
            hot_poll = select_mod.poll()  # (polls nothing until there is a hot channel)
            spins = 0
            boxed = self.vgpu.boxed  # the sessions with a mailbox
            # Fairness: one post per session until every channel has been looked at again (a post
            # can post again itself: its work may write the post word), the sessions in turn.
            taken: set = set()  # the sessions a post was taken from since the last select
            turn = 0  # where the next look at the mailboxes starts
            while self._listener is not None or self._peers:
                polling = poll_s and clock() < poll_until
                served = look = False
                ready: Sequence[tuple[selectors.SelectorKey, int]] = ()
                n = len(boxed)
                for i in range(n):
                    s = boxed[(turn + i) % n]
                    box = s.mailbox
                    if box.words[0] != box.number:  # type: ignore[union-attr]  # posted (Mailbox.posted, inline); boxed: has one
                        if s.key in taken:
                            look = True
                            break
                        taken.add(s.key)
                        turn = (turn + i + 1) % n
                        served = self._take_post(s)
                        break  # (the list may have changed)
                if look:
                    ready = select(0)
                    taken.clear()
                elif served:
                    pass
                elif polling:
                    # Asking the channel that just spoke is far cheaper than a select() over all (that
                    # is the hop a waiting guest pays); the others are looked at every 8th spin. A
                    # poll object on that channel alone: no exception when it is empty, as a recv has.
                    spins += 1
                    if hot != hot_polled:
                        hot_polled, hot_poll = hot, select_mod.poll()
                        if hot in self._peers:
                            hot_poll.register(self._peers[hot].sock, select_mod.POLLIN)
                    served = (hot is not None and hot in self._peers and bool(hot_poll.poll(0))
                              and self._service(hot, selectors.EVENT_READ))
                    if not served:
                        if spins & 7:
                            continue
                        ready = select(0)
                        taken.clear()
                elif self._posted_before_sleep(boxed):
                    served = True
                else:
                    timeout = STATS_INTERVAL if c.stats_file else None
                    gate = self.vgpu.gate
                    if gate is not None and gate.held:
                        timeout = IDLE_S
                    if self._accept_paused_until:
                        timeout = self._resume_accepting(timeout)
                    ready = select(timeout)
                    taken.clear()
                    for s in boxed:
                        s.mailbox.set_awake(True)  # type: ignore[union-attr]  # a boxed session has one
                    if not ready and gate is not None and gate.held:
                        gate.idle()
                for key, mask in ready:
                    if key.data is None:
                        self._accept()
                    elif key.data in self._peers:
                        self._service(key.data, mask)
                        hot = key.data
                if (ready or served) and poll_s:  # counted from the reply, not the request: a call that waits
                    poll_until = clock() + poll_s  # for the GPU must not use up the window
                if self._accept_paused_until:
                    self._resume_accepting(None)
                if self._restart:
                    self._reexec()
                if c.stats_file and time.monotonic() - self._stats_written >= STATS_INTERVAL:
                    self.write_stats()
                if self._connected and not self._peers:
                    log.info("the VM's channel closed: exiting")
                    break
        except Stop:
            log.info("stopping on signal")
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)
            self.close()

    def _posted_before_sleep(self, boxed: list) -> bool:
        """Say in every mailbox that this worker is about to block, then look at them once more:
        a guest that posted before it read that did not ring (Mailbox.post). Whether one had
        (then every mailbox is awake again, and the loop's next turn takes the post)."""
        if not boxed:
            return False
        for s in boxed:
            s.mailbox.set_awake(False)
        fence()
        for s in boxed:
            if s.mailbox.posted():
                for t in boxed:
                    t.mailbox.set_awake(True)
                return True
        return False

    def _take_post(self, session) -> bool:
        """Serve what `session` posted to its mailbox (`_answer`), and the repeats of it that
        follow where the C turn can. Whether anything was posted."""
        cid = session.key[0]
        peer = self._peers.get(cid)
        if peer is None:
            return False
        if _TRACE:
            _mark("w0")
        try:
            reply = peer.channel.take_post(session)
        except RemoteProtocolError:
            self._drop(cid, "protocol violation")
            return False
        except Exception:
            self._failed(cid)
            return False
        if reply is None:
            return False
        self._answer(cid, peer, session, reply)
        if len(self.vgpu.boxed) == 1 and not peer.unsent and session.mailbox is not None:
            # the session posts the same launch + synchronise again and again: the C turn serves
            # those while they come (Channel.serve_repeats), alone among the mailboxes
            served, ring, reply = peer.channel.serve_repeats(session)
            self.mailbox_posts += served
            if ring:
                self._flush(cid, peer, session.doorbell)
            if reply is not None:
                self._answer(cid, peer, session, reply)
        return True

    def _answer(self, cid: int, peer: _Peer, session, reply: bytes) -> None:
        """Answer what `session` posted with `reply`: in its mailbox, or through the channel where
        it is too big for the mailbox or replies sent before it are still unsent (the mailbox
        then says so); a DOORBELL follows where the guest said it sleeps."""
        self.mailbox_posts += 1
        if len(reply) > REPLY_MAX or peer.unsent:
            self._flush(cid, peer, reply)
            reply = b""
        box = session.mailbox
        if box is None:  # the session ended (the channel with it)
            return
        if box.answer(reply):
            self._flush(cid, peer, session.doorbell)
        elif _TRACE:
            _mark("w5")

    def _accept(self) -> None:
        """Take the connections waiting: serve each while fewer than `max_channels` are, refuse
        the rest (a GOODBYE that names the limit, then closed). Out of descriptors (EMFILE,
        ENFILE), one is shed with the spare descriptor, or accepting pauses a moment: the
        connections being served go on either way."""
        listener = self._listener
        assert listener is not None  # (called when it is readable)
        for _ in range(64):  # then the others' turn
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._shed(e)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up or is not allowed: the next one
                raise
            if len(self._peers) >= self.max_channels:
                self._refuse(sock, f"the worker already serves {self.max_channels} connections")
            else:
                self._add_peer(sock)

    def _refuse(self, sock: socket.socket, why: str) -> None:
        """Tell a connection why it is not served (best effort) and close it."""
        self.channels_refused += 1
        try:
            sock.setblocking(False)
            sock.send(Connection(Role.HOST).send(Goodbye(0, why)))
        except OSError:
            pass
        sock.close()
        now = time.monotonic()
        if now - self._refused_logged >= 1.0:  # one line a second, however many come
            self._refused_logged = now
            log.warning("refused a connection (%d so far): %s", self.channels_refused, why)

    def _shed(self, e: OSError) -> None:
        """accept() found no descriptor: give the spare one up to accept the connection and close
        it, or, where even that fails, stop accepting for ACCEPT_PAUSE_S (a listener that stays
        readable must not spin the loop)."""
        why = f"out of file descriptors ({e.strerror})"
        listener = self._listener
        assert listener is not None  # (called by _accept)
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
            try:
                sock, _ = listener.accept()
            except OSError:
                sock = None
            if sock is not None:
                self._refuse(sock, why)
            try:
                self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
            if sock is not None:
                return
        if not self._accept_paused_until:
            log.warning("%s: not accepting connections for %.1f s", why, ACCEPT_PAUSE_S)
            self._sel.unregister(listener)
        self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S

    def _resume_accepting(self, timeout: float | None) -> float | None:
        """Listen again once the pause is over; the select timeout that wakes the loop then."""
        left = self._accept_paused_until - time.monotonic()
        if left > 0:
            return left if timeout is None else min(timeout, left)
        self._accept_paused_until = 0.0
        if self._listener is not None:
            self._sel.register(self._listener, selectors.EVENT_READ, None)
        return timeout

    def _service(self, cid: int, mask: int) -> bool:
        """Read and answer what channel `cid` sent, send what is pending; whether it read bytes."""
        peer = self._peers[cid]
        n = -1
        if mask & selectors.EVENT_READ:
            try:
                n = peer.sock.recv_into(peer.rbuf)
            except (BlockingIOError, InterruptedError):
                n = -1
            except OSError:
                n = 0
            if n == 0:
                self._drop(cid, "closed")
                return False
            if n > 0:
                if _TRACE:
                    _mark("w0")
                try:
                    reply = peer.channel.receive(peer.rview[:n])
                except RemoteProtocolError:
                    self._drop(cid, "protocol violation")
                    return False
                except Exception:
                    self._failed(cid)
                    return False
                self._flush(cid, peer, reply)
                return True
            if not peer.unsent:
                return False
        self._flush(cid, peer)
        return n > 0

    def _flush(self, cid: int, peer: _Peer, reply: bytes = b"") -> None:
        """Send `reply` and what is still unsent from before it, as much as the socket takes; keep
        the rest. The common case, a reply with nothing before it, goes out straight from `reply`
        (no copy into the unsent buffer and out again)."""
        if reply and peer.unsent:
            peer.unsent += reply
            reply = b""
        data = reply or peer.unsent
        if data:
            try:
                sent = peer.sock.send(data)
                if _TRACE:
                    _mark("w5")
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(cid, "send failed")
                return
            if data is reply:
                if sent < len(reply):
                    peer.unsent += reply[sent:]
            else:
                del peer.unsent[:sent]
        if len(peer.unsent) > MAX_UNSENT:
            self._drop(cid, f"more than {MAX_UNSENT} bytes of replies unread")
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.unsent else 0)
        if peer.events != want:
            self._sel.modify(peer.sock, want, cid)
            peer.events = want

    def _failed(self, cid: int) -> None:
        """What channel `cid` sent raised something other than a protocol error: a bug in this
        worker that a guest's bytes reach. Logged with its traceback and counted; that channel is
        closed (its sessions end) and the worker serves the others."""
        log.exception("channel %s: unexpected error while serving it (a bug): closing it", cid)
        self.vgpu.internal_errors += 1
        self._drop(cid, "internal error")

    def _drop(self, cid: int, reason: str) -> None:
        peer = self._peers.pop(cid)
        self._sel.unregister(peer.sock)
        peer.sock.close()
        peer.channel.close(f"channel {reason}")

    # --- a new process after a sticky error --------------------------------------------------------
    def _want_restart(self) -> None:
        self._restart = True

    def _reexec(self) -> None:
        """Start over as a new process (same pid, same argv) after a sticky CUDA error, once the
        VM's last session has ended: in the same process a reset primary context still returns
        the error, only a new process gets a working one. Open connections are closed (they hold
        no session); in loopback mode the listening socket is handed over, so clients that connect
        meanwhile wait in its backlog, and so are the files this worker created (it still removes
        them when it stops). In connect mode the new process connects to QEMU's socket again."""
        code = self.vgpu.broken[0] if self.vgpu.broken else 0
        log.warning("vm %s: sticky CUDA error %d and no session left: re-executing the worker for a "
                    "new context", self.config.vm or "-", code)
        for cid, peer in list(self._peers.items()):
            if peer.unsent:  # the last replies (the error the guest is owed), best effort
                try:
                    peer.sock.setblocking(True)
                    peer.sock.settimeout(1.0)
                    peer.sock.sendall(peer.unsent)
                except OSError:
                    pass
                peer.unsent.clear()
            self._drop(cid, "worker restarting")
        handover: dict[str, object] = {"created": list(self._created)}
        if self._listener is not None:
            if not self._accept_paused_until:
                self._sel.unregister(self._listener)
            self._listener.set_inheritable(True)
            handover["listen_fd"] = self._listener.fileno()
        self.vgpu.close()
        self.write_stats()
        try:
            self._region.close()
        except Exception:
            pass
        os.environ[RESTART_ENV] = json.dumps(handover)
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(sys.executable, sys.orig_argv)
        except OSError as e:  # the caller's finally: close() releases everything; exit non-zero
            os.environ.pop(RESTART_ENV, None)
            self._restart = False
            raise KvmgpuError(f"cannot re-execute the worker after sticky error {code}: {e}") from None

    # --- end -------------------------------------------------------------------------------------
    def close(self) -> None:
        for cid in list(self._peers):
            self._drop(cid, "worker stopping")
        if self._listener is not None:
            if not self._accept_paused_until:
                self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
        self._sel.close()
        self.vgpu.close()
        self.write_stats()
        self._release_files()

    def _release_files(self) -> None:
        try:
            self._region.close()
        except Exception:
            pass
        for path in self._created:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._created.clear()
        if self._lock_fd >= 0:  # (after its file is gone: no second worker takes a lock on it meanwhile)
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- counters --------------------------------------------------------------------------------
    def stats(self) -> dict:
        s = self.vgpu.stats()
        s["pid"] = os.getpid()
        s["channels"] = len(self._peers)
        s["channels_refused"] = self.channels_refused
        s["mailbox_posts"] = self.mailbox_posts
        return s

    def write_stats(self) -> None:
        """Rewrite --stats-file (atomically: a reader never sees half a file)."""
        path = self.config.stats_file
        self._stats_written = time.monotonic()
        if not path:
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.stats(), f, separators=(",", ":"))
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot write stats to %s: %s", path, e)


def _worker_listening(path: str) -> int | None:
    """The pid of the kvmgpu worker that listens on socket `path` (it holds `<path>.lock`), or None
    (QEMU's socket, or a worker's that is gone)."""
    try:
        fd = os.open(path + LOCK_SUFFIX, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() and len(text) < 10 else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def serve(config: WorkerConfig) -> None:
    """Run a worker in the foreground until its channel closes or a signal stops it."""
    logging.basicConfig(level=logging.INFO, format=f"kvmgpu-worker[{config.vm or os.getpid()}] %(message)s")
    Worker(config).run()

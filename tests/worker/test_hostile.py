"""A hostile guest against a real `kvmgpu worker --backend sim` process: what it sends closes its
own connection at most; the worker goes on serving the others."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

from kvmgpu.worker import Worker, WorkerConfig
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.mailbox import Mailbox, mailbox_at
from kvmgpu_wire.protocol import HEADER, MAGIC, PROTOCOL_VERSION, Doorbell, Kind, Op, RemoteProtocolError

from test_process import WorkerProcess, wait_for


def hello_frame(payload: bytes, session: int = 1) -> bytes:
    return HEADER.pack(MAGIC, Kind.HELLO, 0, session, 0, len(payload)) + payload


def closed(sock: socket.socket) -> bool:
    """Whether the worker closed `sock` (its reads end)."""
    while True:
        data = sock.recv(65536)
        if not data:
            return True


def serves(w: WorkerProcess) -> None:
    """A new connection gets a session and an answer."""
    with w.connect() as sock:
        g = w.guest(sock, window=4096)
        assert g.ok(Op.MEM_GET_INFO)[1] == 64 << 20
        g.window.view.release()


def test_a_hello_nested_too_deep_closes_its_connection_only(worker):
    w = worker()
    w.wait_listening()
    with w.connect() as other:
        g = w.guest(other, window=4096)
        with w.connect() as bad:
            bad.sendall(hello_frame(b"[" * 1000 + b"]" * 1000))
            assert closed(bad)
        with w.connect() as bad:
            bad.sendall(hello_frame(b"[" * 16000))
            assert closed(bad)
        assert w.proc.poll() is None, w.log()
        assert g.ok(Op.MEM_GET_INFO)[1] == 64 << 20  # the connection that was there goes on
        g.window.view.release()
    serves(w)
    assert "nests too deep" in w.log()


def test_an_unexpected_error_is_logged_and_closes_that_channel_only(worker):
    """A bug that a guest's bytes reach (here: opening a session raises) is logged with its
    traceback and counted; that channel closes and the worker serves the next one."""
    boom = ("import kvmgpu.worker.vgpu as v\n"
            "def open_session(self, key, window, client='', **kw):\n"
            "    if client == 'boom':\n"
            "        raise RuntimeError('a bug')\n"
            "    return real(self, key, window, client, **kw)\n"
            "real = v.VGpu.open_session\n"
            "v.VGpu.open_session = open_session\n"
            "from kvmgpu.cli import main; main()\n")
    w = worker(command=[sys.executable, "-c", boom])
    w.wait_listening()
    with w.connect() as bad:
        bad.sendall(hello_frame(json.dumps({"version_min": PROTOCOL_VERSION, "version_max": PROTOCOL_VERSION,
                                            "client": "boom"}).encode()))
        assert closed(bad)
    serves(w)
    log = w.log()
    assert "unexpected error while serving it (a bug): closing it" in log
    assert "RuntimeError: a bug" in log  # the traceback
    wait_for(lambda: _stats(w).get("internal_errors") == 1, "the count")


def refused(sock: socket.socket) -> str:
    """The reason of the GOODBYE the worker sent before it closed `sock` ('' if none)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    if len(data) < HEADER.size:
        return ""
    _, kind, _, _, _, length = HEADER.unpack_from(data)
    assert kind == Kind.GOODBYE
    return data[HEADER.size: HEADER.size + length].decode()


def test_connections_past_the_limit_are_refused_and_the_others_served(worker):
    w = worker("--max-channels", "4")
    w.wait_listening()
    socks = [w.connect() for _ in range(4)]
    guests = [w.guest(s, window=4096) for s in socks]
    for _ in range(20):
        with w.connect() as s:
            assert refused(s) == "the worker already serves 4 connections"
    for g in guests:
        assert g.ok(Op.MEM_GET_INFO)[1] == 64 << 20
    guests[0].window.view.release()
    socks[0].close()
    wait_for(lambda: json.loads(Path(w.stats).read_text())["channels"] == 3, "the closed one gone")
    serves(w)  # a place is free again
    assert "refused a connection (1 so far): the worker already serves 4 connections" in w.log()
    for g, s in zip(guests[1:], socks[1:]):
        g.window.view.release()
        s.close()


def test_a_thousand_connections_at_once_under_a_small_descriptor_limit(worker):
    """With RLIMIT_NOFILE at 128 the worker serves 64 connections (FD_SPARE under it) and refuses
    the rest; it never runs out of descriptors, and it keeps serving."""
    import resource
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, old[1]))  # the worker inherits it
    try:
        w = worker()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    w.wait_listening()
    socks = []
    try:
        while len(socks) < 1000:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(w.socket)
            except BlockingIOError:  # the backlog is full: the worker takes them as it goes
                s.close()
                time.sleep(0.001)
                continue
            socks.append(s)
        wait_for(lambda: _stats(w).get("channels_refused") == 1000 - 64, "the refusals")
        assert w.proc.poll() is None, w.log()
        assert _stats(w)["channels"] == 64
        served = [s for s in socks if not refused_now(s)]
        assert len(served) == 64
        served[0].settimeout(15)
        g = w.guest(served[0], window=4096)
        assert g.ok(Op.MEM_GET_INFO)[1] == 64 << 20
        g.window.view.release()
    finally:
        for s in socks:
            s.close()
    serves(w)
    assert "at most 64 connections" in w.log()


def _stats(w: WorkerProcess) -> dict:
    try:
        return json.loads(Path(w.stats).read_text())
    except (OSError, ValueError):
        return {}


def refused_now(sock: socket.socket) -> bool:
    """Whether the worker has refused `sock` (a GOODBYE or its end is there to read)."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    return not data or HEADER.unpack_from(data)[1] == Kind.GOODBYE


class _NoDescriptors:
    """A listening socket whose accept() fails with EMFILE `times` times, then accepts."""

    def __init__(self, sock, times: int):
        self.sock, self.times = sock, times

    def fileno(self):
        return self.sock.fileno()

    def accept(self):
        if self.times:
            self.times -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return self.sock.accept()

    def __getattr__(self, name):
        return getattr(self.sock, name)


def loopback_worker(tmp_path) -> Worker:
    w = Worker(WorkerConfig(backend="sim", gmem=64 << 20, socket=str(tmp_path / "s"),
                            shm=str(tmp_path / "r"), region_size=1 << 20))
    w._open_socket()
    return w


def test_out_of_descriptors_sheds_the_connection_with_the_spare_one(tmp_path):
    w = loopback_worker(tmp_path)
    try:
        w._listener = _NoDescriptors(w._listener, 1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(w.config.socket)
            w._accept()
            assert refused(c).startswith("out of file descriptors")
        assert not w._peers and w._spare_fd >= 0 and not w._accept_paused_until
    finally:
        w.close()


def test_out_of_descriptors_even_to_shed_pauses_accepting(tmp_path):
    w = loopback_worker(tmp_path)
    try:
        w._listener = _NoDescriptors(w._listener, 2)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(w.config.socket)
            w._accept()  # EMFILE, and EMFILE again with the spare descriptor given up
            assert w._accept_paused_until and w._listener.fileno() not in w._sel.get_map()
            assert 0 < w._resume_accepting(None) <= 0.1  # select wakes the loop when it is over
            w._accept_paused_until = time.monotonic()
            assert w._resume_accepting(5.0) == 5.0
            assert w._listener.fileno() in w._sel.get_map()  # listening again
            w._accept()
            assert len(w._peers) == 1
    finally:
        w.close()


def self_posting(w: WorkerProcess, sock: socket.socket):
    """A session whose mailbox post, once taken, posts again: its work swaps two device words and
    copies one of them over the post word, so the word differs from the one taken every time.
    (guest, its mailbox) once posted."""
    g = w.guest(sock, window=1 << 20)
    box = Mailbox(g.window.view, mailbox_at(g.window.size))
    a, b, t = g.alloc(4), g.alloc(4), g.alloc(4)
    g.put(a, struct.pack("<I", 8))
    g.put(b, struct.pack("<I", 7))
    post_word = mailbox_at(g.window.size)
    frames = [g.frame(Op.MEMCPY_DTOD, t, a, 4, 0, queued=True),
              g.frame(Op.MEMCPY_DTOD, a, b, 4, 0, queued=True),
              g.frame(Op.MEMCPY_DTOD, b, t, 4, 0, queued=True),
              g.frame(Op.MEMCPY_DTOH, post_word, a, 4, 0)]
    if not box.post(b"", b"".join(frames)):
        sock.sendall(g.conn.send(Doorbell(g.session)))
    wait_for(lambda: box.words[16] != 0, "the first answer")  # (answer: it posted itself again)
    return g, box


def test_a_post_that_posts_itself_again_starves_no_one(worker):
    """The worker takes one post per session until it has looked at the channels again, the
    sessions in turn: a session whose post posts itself keeps only itself busy, another session's
    post and another connection are served, and when the guest goes its session ends."""
    w = worker()
    w.wait_listening()
    with w.connect() as bad_sock:
        bad, bad_box = self_posting(w, bad_sock)
        with w.connect() as other_sock:
            other = w.guest(other_sock, window=1 << 20)
            box = Mailbox(other.window.view, mailbox_at(other.window.size))
            if not box.post(b"", other.frame(Op.MEM_GET_INFO)):
                other_sock.sendall(other.conn.send(Doorbell(other.session)))
            wait_for(box.answered, "the other session's answer", timeout=10)
            (reply,) = other._events(box.answer_bytes())
            assert reply.status == 0 and reply.values[1] == 64 << 20
            box.release()
            other.window.view.release()
        serves(w)
        bad_box.release()
        bad.window.view.release()
    wait_for(lambda: "session 1:1 end" in w.log(), "the gone guest's session to end")
    serves(w)


def test_frame_limits_are_each_sessions_own(host):
    """Two sessions on one channel negotiate 4 KiB and 64 KiB frames: a 8 KiB frame is legal on
    the second (its call is answered) and a violation on the first only."""
    small = host.guest(window=65536, session=1, max_frame=4096)
    assert small.welcome.max_frame == 4096
    ch = small.channel
    big = host.guest(window=65536, session=2, channel=ch)
    assert big.welcome.max_frame == 64 << 10
    r = big.call(Op.LAUNCH, 99, 1, 1, 1, 1, 1, 1, 0, 0, blob=bytes(8000))  # no function 99
    assert r.status == CUresult.CUDA_ERROR_INVALID_HANDLE and not ch.closed
    launches = b"".join(big.frame(Op.LAUNCH, 99, 1, 1, 1, 1, 1, 1, 0, 0, blob=bytes(8000), queued=True)
                        for _ in range(3))  # the queued launches' fast path too
    assert ch.receive(launches) == b"" and not ch.closed
    r = big.call(Op.CTX_SYNCHRONIZE)  # the first queued launch's error
    assert r.status == CUresult.CUDA_ERROR_INVALID_HANDLE and not ch.closed
    with pytest.raises(RemoteProtocolError, match="over the limit of 4096"):
        small.call(Op.LAUNCH, 99, 1, 1, 1, 1, 1, 1, 0, 0, blob=bytes(8000), queued=True)
    assert ch.closed

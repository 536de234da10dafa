"""Stream capture and CUDA graphs in the worker (kvmgpu/worker/graphs.py), on the sim backend: the
work a guest sends to a capturing stream is captured, not run, and a graph launch replays it; the
graph and its executable are the session's handles only; the quota holds during a capture; what
a session leaves behind goes with it; and the compute gate charges a graph launch the GPU time of
the kernels in it, as it charges those kernels launched one by one."""

from __future__ import annotations

import struct

import pytest

from kvmgpu.backend import simkernels
from kvmgpu.compute.board import Board
from kvmgpu.compute.gate import ComputeGate
from kvmgpu.compute.meter import WallMeter
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import Op

from rawguest import MIB, Host, floats, unfloats

N = 64


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path, gmem=4 * MIB)
    yield h
    h.close()


def saxpy_args(a: float, x: int, y: int, n: int = N) -> bytes:
    return struct.pack("<fxxxxQQi", a, x, y, n)


def launch(g, fn: int, stream: int, blob: bytes, queued: bool = True):
    return g.call(Op.LAUNCH, fn, 1, 1, 1, N, 1, 1, 0, stream, blob=blob, queued=queued)


def captured_saxpy(g):
    """A session with x = 1, 2, ... and y = 0, and a graph of y = 2x + y captured on a stream:
    (x, y, stream, graph, executable)."""
    fn = g.function(g.load(), "saxpy")[0]
    x, y = g.alloc(4 * N), g.alloc(4 * N)
    g.put(x, floats(range(1, N + 1)))
    g.put(y, floats([0.0] * N))
    stream = g.ok(Op.STREAM_CREATE, 0)[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    launch(g, fn, stream, saxpy_args(2.0, x, y))
    g.call(Op.MEMSET_D32, x, 0, 1, stream, queued=True)  # x[0] = 0.0 after the saxpy
    graph = g.ok(Op.STREAM_END_CAPTURE, stream)[0]
    return x, y, stream, graph, g.ok(Op.GRAPH_INSTANTIATE, graph, 0)[0]


def test_a_graph_replays_what_the_stream_captured(host):
    g = host.guest(window=1 * MIB)
    x, y, stream, graph, exe = captured_saxpy(g)
    assert unfloats(g.get(y, 4 * N)) == [0.0] * N, "captured work does not run"
    assert unfloats(g.get(x, 4))[0] == 1.0
    g.ok(Op.GRAPH_UPLOAD, exe, stream)
    for _ in range(3):
        g.call(Op.GRAPH_LAUNCH, exe, stream, queued=True)
    g.ok(Op.STREAM_SYNCHRONIZE, stream)
    want = [2.0 * 1] + [2.0 * 3 * i for i in range(2, N + 1)]  # x[0] is 0 from the first replay on
    assert unfloats(g.get(y, 4 * N)) == want
    assert unfloats(g.get(x, 4))[0] == 0.0


def test_graph_handles_are_the_session_s_own(host):
    ch = host.channel()
    a, b = host.guest(window=1 * MIB, session=1, channel=ch), host.guest(window=1 * MIB, session=2, channel=ch)
    _, _, stream, graph, exe = captured_saxpy(a)
    for op, args in ((Op.GRAPH_LAUNCH, (exe, 0)), (Op.GRAPH_UPLOAD, (exe, 0)), (Op.GRAPH_EXEC_DESTROY, (exe,)),
                     (Op.GRAPH_INSTANTIATE, (graph, 0)), (Op.GRAPH_DESTROY, (graph,))):
        r = b.call(op, *args)
        assert r.status == CUresult.CUDA_ERROR_INVALID_HANDLE and b"not a handle of this session" in r.blob, r
    a.ok(Op.GRAPH_EXEC_DESTROY, exe)
    r = a.call(Op.GRAPH_LAUNCH, exe, stream)
    assert r.status == CUresult.CUDA_ERROR_INVALID_HANDLE, "a destroyed executable graph"
    a.ok(Op.GRAPH_LAUNCH, a.ok(Op.GRAPH_INSTANTIATE, graph, 0)[0], stream)  # its graph lives on


def test_a_copy_between_the_window_and_a_capturing_stream_is_refused(host):
    g = host.guest(window=1 * MIB)
    p = g.alloc(4096)
    stream = g.ok(Op.STREAM_CREATE, 1)[0]  # non-blocking (the null stream's copy below is no dependency)
    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    for op, args in ((Op.MEMCPY_HTOD, (p, 0, 64, stream)), (Op.MEMCPY_DTOH, (0, p, 64, stream))):
        r = g.call(op, *args)
        assert r.status == CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and b"capturing stream" in r.blob
    g.ok(Op.MEMCPY_HTOD, p, 0, 64, 0)  # on another stream
    g.ok(Op.STREAM_END_CAPTURE, stream)  # the capture was not invalidated by the refusals


def forked(g):
    """A capture begun on `origin` and forked onto `side` (an event recorded on the one, waited for
    by the other): (origin, side, the event)."""
    origin, side = g.ok(Op.STREAM_CREATE, 1)[0], g.ok(Op.STREAM_CREATE, 1)[0]
    event = g.ok(Op.EVENT_CREATE, 2)[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, origin)
    g.call(Op.EVENT_RECORD, event, origin, queued=True)
    g.call(Op.STREAM_WAIT_EVENT, side, event, 0, queued=True)
    return origin, side, event


def test_a_stream_that_waits_for_an_event_of_a_capture_joins_it(host):
    g = host.guest(window=1 * MIB)
    p = g.alloc(4096)
    origin, side, event = forked(g)
    s = host.vgpu.sessions[(g.channel.cid, 1)]
    assert s.captures == {origin, side} and s.joined == {side: origin}
    r = g.call(Op.MEMCPY_HTOD, p, 0, 64, side)  # a copy from the window into the fork: refused
    assert r.status == CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and b"capturing stream" in r.blob
    g.call(Op.MEMSET_D8, p, 7, 16, side, queued=True)
    g.call(Op.EVENT_RECORD, event, side, queued=True)
    g.call(Op.STREAM_WAIT_EVENT, origin, event, 0, queued=True)  # joined back
    graph = g.ok(Op.STREAM_END_CAPTURE, origin)[0]
    assert not s.captures and not s.joined and not s.captured_events
    assert g.ok(Op.GRAPH_GET_NODE_COUNT, graph) == (1,)  # the memset (events are no nodes)
    assert g.get(p, 16) == bytes(16)
    g.ok(Op.GRAPH_LAUNCH, g.ok(Op.GRAPH_INSTANTIATE, graph, 0)[0], origin)
    g.ok(Op.STREAM_SYNCHRONIZE, origin)
    assert g.get(p, 16) == bytes([7] * 16)


@pytest.mark.parametrize("end, error", [("origin", CUresult.CUDA_ERROR_STREAM_CAPTURE_UNJOINED),
                                        ("side", CUresult.CUDA_ERROR_STREAM_CAPTURE_UNMATCHED)])
def test_a_fork_must_be_joined_and_only_the_origin_ends_the_capture(host, end, error):
    g = host.guest(window=1 * MIB)
    p = g.alloc(4096)
    origin, side, event = forked(g)
    g.call(Op.MEMSET_D8, p, 7, 16, side, queued=True)  # never waited for by the origin
    r = g.call(Op.STREAM_END_CAPTURE, {"origin": origin, "side": side}[end])
    assert r.status == error, r
    if end == "side":
        r = g.call(Op.STREAM_END_CAPTURE, origin)
        assert r.status == CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, r
    s = host.vgpu.sessions[(g.channel.cid, 1)]
    assert not s.captures and not s.joined and host.vgpu.backend.capturing == 0


def test_two_captures_do_not_merge(host):
    g = host.guest(window=1 * MIB)
    origin, side, event = forked(g)
    other = g.ok(Op.STREAM_CREATE, 1)[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, other)
    g.call(Op.STREAM_WAIT_EVENT, other, event, 0, queued=True)
    r = g.call(Op.STREAM_QUERY, g.ok(Op.STREAM_CREATE, 1)[0])  # (a queued call's error: the next synchronising call's)
    assert r.status == CUresult.CUDA_ERROR_STREAM_CAPTURE_MERGE, r
    r = g.call(Op.STREAM_END_CAPTURE, other)
    assert r.status == CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, r


def test_the_quota_holds_during_a_capture(host):
    g = host.guest(window=1 * MIB)
    stream = g.ok(Op.STREAM_CREATE, 1)[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    r = g.call(Op.MEM_ALLOC, 8 * MIB)
    assert r.status == CUresult.CUDA_ERROR_OUT_OF_MEMORY and b"quota" in r.blob
    g.alloc(1 * MIB)
    assert host.vgpu.quota.used >= 1 * MIB
    g.ok(Op.STREAM_END_CAPTURE, stream)


def test_what_a_session_leaves_goes_with_it(host):
    g = host.guest(window=1 * MIB)
    captured_saxpy(g)
    open_capture = g.ok(Op.STREAM_CREATE, 0)[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, open_capture)
    b = host.vgpu.backend
    assert b.capturing == 1
    host.vgpu.end_session((g.channel.cid, 1), "test")
    assert b.capturing == 0 and host.vgpu.objects == 0 and host.vgpu.quota.used == 0
    assert not host.vgpu.errors, host.vgpu.errors


def test_destroying_a_capturing_stream_ends_its_capture(host):
    g = host.guest(window=1 * MIB)
    stream = g.ok(Op.STREAM_CREATE, 0)[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    g.ok(Op.STREAM_DESTROY, stream)
    assert host.vgpu.backend.capturing == 0
    g.ok(Op.CTX_SYNCHRONIZE)  # nothing captures any more


def test_the_driver_s_rules_break_a_capture_in_the_sim_as_on_the_gpu(host):
    """What would invalidate a capture on the GPU does in the sim too: a context synchronise, a
    synchronise of the capturing stream, work on the null stream while a blocking stream captures."""
    g = host.guest(window=1 * MIB)
    p = g.alloc(4096)
    for breaker, error in (((Op.CTX_SYNCHRONIZE,), CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED),
                           ((Op.STREAM_SYNCHRONIZE, "stream"), CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED),
                           ((Op.MEMSET_D8, p, 0, 16, 0), CUresult.CUDA_ERROR_STREAM_CAPTURE_IMPLICIT)):
        stream = g.ok(Op.STREAM_CREATE, 0)[0]
        g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
        r = g.call(*(stream if a == "stream" else a for a in breaker))
        assert r.status == error, (breaker, r)
        r = g.call(Op.STREAM_END_CAPTURE, stream)
        assert r.status == CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, r
    stream = g.ok(Op.STREAM_CREATE, 1)[0]  # non-blocking: the null stream is free to use
    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    g.ok(Op.MEMSET_D8, p, 0, 16, 0)
    g.ok(Op.STREAM_END_CAPTURE, stream)


# --- the compute gate ---------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_a_graph_launch_is_charged_the_gpu_time_of_its_kernels(host, tmp_path, monkeypatch):
    """Three 1 ms kernels cost the VM 3 ms of GPU time launched one by one, and 3 ms launched as
    one graph (the sim's `spin` kernel moves the gate's clock by its time)."""
    clock = Clock()
    monkeypatch.setitem(simkernels.KERNELS, "spin", simkernels.SimKernel(
        "spin", "q", lambda launch, ns: clock.sleep(ns / 1e9)))
    board = Board(str(tmp_path / "board"))
    gate = ComputeGate(board, "share", 100, WallMeter(clock=clock), clock=clock, sleep=clock.sleep,
                       slice_s=10.0)
    host.vgpu.attach_gate(gate)
    g = host.guest(window=1 * MIB)
    spin = g.function(g.load(), "spin")[0]
    stream = g.ok(Op.STREAM_CREATE, 0)[0]
    ms = struct.pack("<q", 1_000_000)

    def charged(work) -> float:
        before = gate.gpu_seconds
        work()
        g.ok(Op.CTX_SYNCHRONIZE)
        gate.idle()  # the slice ends: its GPU time is charged
        return gate.gpu_seconds - before

    def one_by_one():
        for _ in range(3):
            g.call(Op.LAUNCH, spin, 1, 1, 1, 1, 1, 1, 0, stream, blob=ms, queued=True)

    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    one_by_one()
    graph = g.ok(Op.STREAM_END_CAPTURE, stream)[0]
    exe = g.ok(Op.GRAPH_INSTANTIATE, graph, 0)[0]
    assert charged(lambda: None) == 0.0  # capturing ran nothing
    assert charged(one_by_one) == pytest.approx(0.003)
    assert charged(lambda: g.call(Op.GRAPH_LAUNCH, exe, stream, queued=True)) == pytest.approx(0.003)
    assert charged(lambda: [g.call(Op.GRAPH_LAUNCH, exe, stream, queued=True) for _ in range(2)]) \
        == pytest.approx(0.006)
    board.close()


def test_the_meter_leaves_a_capture_alone(host, tmp_path):
    """Under a gate whose meter records CUDA events on the null stream (the cuda backend's way),
    a capture on one of the VM's streams (all blocking under a gate) survives launches and slice
    ends: on the GPU a null-stream record or a context drain would invalidate it."""
    from kvmgpu.compute.meter import EventMeter
    board = Board(str(tmp_path / "board"))
    clock = Clock()
    gate = ComputeGate(board, "share", 100, EventMeter(lambda: host.vgpu.backend, clock=clock), clock=clock,
                       sleep=clock.sleep)
    host.vgpu.attach_gate(gate)
    g = host.guest(window=1 * MIB)
    stream = g.ok(Op.STREAM_CREATE, 0)[0]
    spin = g.function(g.load(), "spin")[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    g.call(Op.LAUNCH, spin, 1, 1, 1, 1, 1, 1, 0, stream, blob=struct.pack("<q", 0), queued=True)
    gate.idle()  # a slice ends during the capture
    g.call(Op.LAUNCH, spin, 1, 1, 1, 1, 1, 1, 0, stream, blob=struct.pack("<q", 0), queued=True)
    graph = g.ok(Op.STREAM_END_CAPTURE, stream)[0]
    g.ok(Op.GRAPH_LAUNCH, g.ok(Op.GRAPH_INSTANTIATE, graph, 0)[0], stream)
    g.ok(Op.CTX_SYNCHRONIZE)
    gate.close()
    board.close()

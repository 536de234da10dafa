"""A loop of launch + synchronise messages (the round-trip pattern) on the worker: a message that
repeats the last one, byte for byte but for its two sequence numbers and the launch's argument
bytes, is taken by comparing those bytes (`Connection.take_launch_wait`) and not decoded and
checked again; it must come to exactly what the general path comes to."""

from __future__ import annotations

import pytest

from kvmgpu.worker import channel as channel_module
from kvmgpu_wire import protocol
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import Op, RemoteProtocolError

from rawguest import Host, floats, unfloats
from test_launcher import OUT_OF_RESOURCES, SimThroughC, vadd_args

N = 64


def refuse_n_13(call) -> int:
    """The driver refuses a vector_add whose n is 13 (its arguments, not its shape)."""
    return OUT_OF_RESOURCES if call["args"] and call["args"][-4:] == (13).to_bytes(4, "little") else 0


def make_host(tmp_path, name: str):
    """A host on the sim backend behind the C module, a session with c = 0 and b = 1 (N floats),
    and vector_add loaded: (host, guest, function, (b, c, d))."""
    (tmp_path / name).mkdir()
    h = Host(tmp_path / name, backend=lambda **kw: SimThroughC(refuse=refuse_n_13, **kw))
    g = h.guest(window=1 << 20)
    b, c, d = (g.alloc(4 * N) for _ in range(3))
    g.put(b, floats([1.0] * N))
    g.put(c, floats([0.0] * N))
    f, _ = g.function(g.load(offset=64 * 1024), "vector_add")
    return h, g, f, (b, c, d)


@pytest.fixture
def loop(tmp_path):
    h, g, f, bufs = make_host(tmp_path, "a")
    yield h, g, f, bufs
    h.close()


def message(g, f, args: bytes, wait=(Op.STREAM_SYNCHRONIZE, 0)) -> bytes:
    return b"".join([g.frame(Op.LAUNCH, f, 1, 1, 1, N, 1, 1, 0, 0, blob=args, queued=True),
                     g.frame(wait[0], *wait[1:])])


def reply_of(g, data: bytes):
    (r,) = g._events(data)
    return r


@pytest.mark.parametrize("wait", [(Op.STREAM_SYNCHRONIZE, 0), (Op.CTX_SYNCHRONIZE,)])
def test_a_loop_of_launch_and_wait_runs_each_launch_once_with_its_own_arguments(loop, monkeypatch, wait):
    h, g, f, (b, c, d) = loop
    runs = []
    launch_run = channel_module.launch_run
    monkeypatch.setattr(channel_module, "launch_run", lambda *a: runs.append(1) or launch_run(*a))
    h.vgpu.calls.clear()
    for i in range(5):
        out = (c, d)[i % 2]  # c += 1 into c, then d = c + 1 (other arguments, same bytes else)
        data = message(g, f, vadd_args(c, b, out, N), wait)
        assert reply_of(g, g.channel.receive(data)).status == 0
    assert unfloats(g.get(c, 4 * N)) == [3.0] * N and unfloats(g.get(d, 4 * N)) == [3.0] * N
    calls = h.vgpu.backend.driver.calls
    assert [call["args"] for call in calls] == [vadd_args(c, b, (c, d)[i % 2], N) for i in range(5)]
    assert runs == [1]  # only the first message was decoded and checked the general way
    assert h.vgpu.calls[Op.LAUNCH] == 5 and h.vgpu.calls[wait[0]] == 5


def test_each_reply_answers_its_own_synchronise(loop):
    h, g, f, (b, c, d) = loop
    for _ in range(3):
        data = message(g, f, vadd_args(c, b, c, N))
        r = reply_of(g, g.channel.receive(data))
        assert (r.status, r.seq) == (0, int.from_bytes(data[-20:-16], "little"))


def test_a_launch_the_driver_refuses_in_the_loop_is_reported_under_its_own_seq(loop):
    h, g, f, (b, c, d) = loop
    assert reply_of(g, g.channel.receive(message(g, f, vadd_args(c, b, c, N)))).status == 0
    refused = message(g, f, vadd_args(c, b, c, 13))
    r = reply_of(g, g.channel.receive(refused))
    seq = int.from_bytes(refused[8:12], "little")
    assert r.status == OUT_OF_RESOURCES
    assert r.blob.startswith(f"LAUNCH (queued, seq {seq}): ".encode())
    assert reply_of(g, g.channel.receive(message(g, f, vadd_args(c, b, c, N)))).status == 0
    assert unfloats(g.get(c, 4 * N)) == [2.0] * N


def test_a_function_unloaded_between_two_messages_fails_the_next(loop):
    h, g, f, (b, c, d) = loop
    other, _ = g.function(g.load(offset=128 * 1024), "vector_add")
    module = g.load(offset=192 * 1024)
    f2, _ = g.function(module, "vector_add")
    assert reply_of(g, g.channel.receive(message(g, f2, vadd_args(c, b, c, N)))).status == 0
    g.ok(Op.MODULE_UNLOAD, module)
    r = reply_of(g, g.channel.receive(message(g, f2, vadd_args(c, b, c, N))))
    assert r.status == CUresult.CUDA_ERROR_INVALID_HANDLE
    assert unfloats(g.get(c, 4 * N)) == [1.0] * N


def test_a_session_ended_between_two_messages_is_no_session_for_the_next(loop):
    """A session can end without a message on its channel (the channel's other half, the daemon):
    the next message finds no session, as it would on the general path, and launches nothing."""
    h, g, f, (b, c, d) = loop
    assert reply_of(g, g.channel.receive(message(g, f, vadd_args(c, b, c, N)))).status == 0
    h.vgpu.end_session((g.channel.cid, g.session), "test")
    r = reply_of(g, g.channel.receive(message(g, f, vadd_args(c, b, c, N))))
    assert r.status == CUresult.CUDA_ERROR_INVALID_CONTEXT
    assert len(h.vgpu.backend.driver.calls) == 1


def test_the_gate_is_asked_before_every_launch_of_the_loop(loop):
    h, g, f, (b, c, d) = loop

    class Gate:
        held, gpu_seconds, asked = False, 0.0, 0

        def clock(self):
            return 1.0

        def free_until(self):
            return 0.0  # always something to do

        def before_launch(self):
            self.asked += 1
            return 0.0

        def close(self):
            pass
    h.vgpu.gate = gate = Gate()
    for _ in range(4):
        assert reply_of(g, g.channel.receive(message(g, f, vadd_args(c, b, c, N)))).status == 0
    assert gate.asked == 4


def test_a_message_split_across_reads_goes_the_general_way_with_the_same_result(loop):
    h, g, f, (b, c, d) = loop
    assert reply_of(g, g.channel.receive(message(g, f, vadd_args(c, b, c, N)))).status == 0
    data = message(g, f, vadd_args(c, b, c, N))
    assert g.channel.receive(data[:50]) == b""
    assert reply_of(g, g.channel.receive(data[50:])).status == 0
    data = message(g, f, vadd_args(c, b, c, N)) + message(g, f, vadd_args(c, b, c, N))
    assert [r.status for r in g._events(g.channel.receive(data))] == [0, 0]
    assert unfloats(g.get(c, 4 * N)) == [4.0] * N


def _outcome(h, g, data: bytes):
    """What the host made of `data`: its reply bytes or the protocol error, the launches the
    driver saw, the calls and errors counted, and what a CTX_SYNCHRONIZE says after it."""
    try:
        got = g.channel.receive(data)
    except RemoteProtocolError as e:
        got = f"protocol error: {e}"
    after = None if g.channel.closed else g.channel.receive(
        g.conn.send_call(g.session, 999, Op.CTX_SYNCHRONIZE, ()))
    return (got, [(c["shape"], c["args"]) for c in h.vgpu.backend.driver.calls],
            dict(h.vgpu.calls), dict(h.vgpu.errors), after)


LAUNCH_SIZE = protocol._LAUNCH_FIXED + 28  # vector_add's 28 argument bytes
CHECKED = ([i for i in range(protocol._LAUNCH_FIXED) if not 8 <= i < 12]
           + [LAUNCH_SIZE + i for i in range(28) if not 8 <= i < 12])


@pytest.mark.parametrize("at", [None] + CHECKED)
def test_a_message_is_taken_again_only_when_every_checked_byte_is_the_same(tmp_path, at):
    """The same message with one byte of its launch frame (but the seq and arguments) or of its
    synchronise (but the seq) changed comes to the same on a host that has just taken the message
    it was changed from as on one that has not: it is decoded and checked on its own. (`at` None:
    the message unchanged, which launches on both.)"""
    outcomes = []
    for name, warm_first in (("again", False), ("fresh", True)):
        h, g, f, (b, c, d) = make_host(tmp_path, name)
        try:
            warm = message(g, f, vadd_args(c, b, c, N))
            info = g.conn.send_call(g.session, g.conn.next_seq(), Op.MEM_GET_INFO, ())
            # both hosts see the same two messages; only "again" has the launch + wait last
            for data in ((warm, info) if warm_first else (info, warm)):
                g._events(g.channel.receive(data))
            h.vgpu.backend.driver.calls.clear()
            changed = bytearray(message(g, f, vadd_args(c, b, d, N)))
            if at is not None:
                changed[at] ^= 0x5A
            outcomes.append(_outcome(h, g, bytes(changed)))
        finally:
            h.close()
    assert outcomes[0] == outcomes[1]
    if at is None:
        assert len(outcomes[0][1]) == 1

"""The worker's C turn (`Channel.serve_repeats`, launcher.c's `serve_repeats`): once the worker has
served a launch + synchronise posted to a session's mailbox, the posts that repeat it (byte for
byte but for the two sequence numbers and the launch's argument bytes) are compared, launched,
synchronised and answered in C. Each must come to what the Python path comes to: the launch with
its own arguments, the reply to its own synchronise, the driver's errors as the guest's, the
counters; anything else posted is left in the mailbox for the worker's loop, untouched; and no
bytes a guest posts can make it launch what the worker did not check."""

from __future__ import annotations

import ctypes
import random
import threading

import pytest

from kvmgpu.backend import launcher
from kvmgpu.backend.base import Capabilities
from kvmgpu.worker import channel as channel_module
from kvmgpu_wire.mailbox import Mailbox, mailbox_at
from kvmgpu_wire.protocol import Op

from rawguest import Host, floats, unfloats
from test_launch_wait import N, refuse_n_13
from test_launcher import OUT_OF_RESOURCES, SYNC_PROTO, SimThroughC, vadd_args

CTX_SYNC_PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)  # (CUDA 13's: the context)
ILLEGAL_ADDRESS = 700


class SimWithTurn(SimThroughC):
    """SimThroughC with the C turn: its launches go to the fake driver (which runs them on the sim),
    its synchronises to two fake ones that count their calls and fail with `self.sync_error`."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.syncs: list[str] = []
        self.sync_error = 0
        self._ctx = CTX_SYNC_PROTO(lambda ctx: self._sync(f"context {ctx:#x}"))
        self._stream = SYNC_PROTO(lambda s: self._sync(f"stream {s or 0}"))
        addr = [ctypes.cast(f, ctypes.c_void_p).value for f in (self._ctx, self._stream)]
        c = self.capabilities
        self.capabilities = Capabilities(launch_records=c.launch_records, launch_in=c.launch_in,
                                         launch_flat=c.launch_flat,
                                         repeats=launcher.RepeatTurn(self.driver.address, *addr,
                                                                     context=lambda: 0xC0))

    def _sync(self, what: str) -> int:
        self.syncs.append(what)
        return self.sync_error


@pytest.fixture
def turn(tmp_path):
    """(host, guest, function, (b, c, d), the session on the host, the guest's end of its mailbox)
    with c = 0 and b = 1 (N floats)."""
    h = Host(tmp_path, backend=lambda **kw: SimWithTurn(refuse=refuse_n_13, **kw))
    g = h.guest(window=1 << 20)
    b, c, d = (g.alloc(4 * N) for _ in range(3))
    g.put(b, floats([1.0] * N))
    g.put(c, floats([0.0] * N))
    f, _ = g.function(g.load(offset=64 * 1024), "vector_add")
    session = h.vgpu.sessions[(g.channel.cid, g.session)]
    box = Mailbox(g.window.view, mailbox_at(g.window.size))
    yield h, g, f, (b, c, d), session, box
    box.release()
    h.close()


def message(g, f, args: bytes, wait=(Op.CTX_SYNCHRONIZE,)) -> bytes:
    return g.frame(Op.LAUNCH, f, 1, 1, 1, N, 1, 1, 0, 0, blob=args, queued=True) + g.frame(*wait)


def served_by_python(g, session, box, data: bytes):
    """Post `data` and serve it the worker's Python way (take_post); the reply's events."""
    box.post(b"", data)
    session.mailbox.answer(g.channel.take_post(session))
    return g._events(box.answer_bytes())


def other_session(data: bytes, session: int) -> bytes:
    """`data` with its first frame's session (header: magic, kind, flags, session, ...) changed."""
    return data[:4] + session.to_bytes(4, "little") + data[8:]


def launch_size(data: bytes) -> int:
    """The first frame's size (header: magic, kind, flags, session, seq, length; then length bytes)."""
    return 16 + int.from_bytes(data[12:16], "little")


def seq_of_wait(data: bytes) -> int:
    """The second frame's seq."""
    at = launch_size(data) + 8
    return int.from_bytes(data[at:at + 4], "little")


def test_a_repeat_posted_is_launched_with_its_own_arguments_and_answered_in_c(turn, monkeypatch):
    h, g, f, (b, c, d), session, box = turn
    (r,) = served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    assert r.status == 0
    monkeypatch.setattr(channel_module, "launch_run", lambda *a: pytest.fail("decoded again"))
    h.vgpu.calls.clear()
    data = message(g, f, vadd_args(c, b, d, N))  # d = c + 1: other argument bytes, same else
    box.post(b"", data)
    served, ring, reply = g.channel.serve_repeats(session)
    assert (served, ring, reply) == (1, False, None)
    assert box.answered()
    (r,) = g._events(box.answer_bytes())
    assert (r.status, r.seq) == (0, seq_of_wait(data))
    assert unfloats(g.get(d, 4 * N)) == [2.0] * N
    assert h.vgpu.backend.syncs == ["context 0xc0"]  # (the Python path waits on the sim itself)
    assert h.vgpu.calls[Op.LAUNCH] == 1 and h.vgpu.calls[Op.CTX_SYNCHRONIZE] == 1


def test_a_guest_that_posts_in_a_loop_is_served_in_one_turn(turn):
    h, g, f, (b, c, d), session, box = turn
    served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N), (Op.STREAM_SYNCHRONIZE, 0)))
    seqs, replies = [], []

    def guest():  # as the library does: post, spin for the answer, post again
        for _ in range(40):
            data = message(g, f, vadd_args(c, b, c, N), (Op.STREAM_SYNCHRONIZE, 0))
            seqs.append(seq_of_wait(data))
            box.post(b"", data)
            while not box.answered():
                pass
            replies.extend(g._events(box.answer_bytes()))
    t = threading.Thread(target=guest)
    t.start()
    total = 0
    while t.is_alive() or session.mailbox.posted():
        served, ring, reply = g.channel.serve_repeats(session)
        assert not ring and reply is None
        total += served
    t.join()
    assert total == 40 and [r.seq for r in replies] == seqs and {r.status for r in replies} == {0}
    assert unfloats(g.get(c, 4 * N)) == [41.0] * N  # each launch ran once: c += 1, 41 times
    assert h.vgpu.backend.syncs == ["stream 0"] * 40


@pytest.mark.parametrize("other", ["shape", "function", "op", "longer", "session"])
def test_a_post_that_is_no_repeat_is_left_for_the_worker(turn, other):
    h, g, f, (b, c, d), session, box = turn
    served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    f2, _ = g.function(g.load(offset=64 * 1024), "vector_add")
    launch = {"shape": g.frame(Op.LAUNCH, f, 2, 1, 1, N, 1, 1, 0, 0, blob=vadd_args(c, b, c, N), queued=True),
              "function": g.frame(Op.LAUNCH, f2, 1, 1, 1, N, 1, 1, 0, 0, blob=vadd_args(c, b, c, N), queued=True)}
    data = {"op": g.frame(Op.LAUNCH, f, 1, 1, 1, N, 1, 1, 0, 0, blob=vadd_args(c, b, c, N), queued=True)
            + g.frame(Op.STREAM_SYNCHRONIZE, 0),
            "longer": message(g, f, vadd_args(c, b, c, N)) + g.frame(Op.CTX_SYNCHRONIZE),
            "session": other_session(message(g, f, vadd_args(c, b, c, N)), g.session + 1)}.get(other) \
        or launch[other] + g.frame(Op.CTX_SYNCHRONIZE)
    box.post(b"", data)
    before = h.vgpu.backend.syncs[:]
    assert g.channel.serve_repeats(session) == (0, False, None)
    assert session.mailbox.posted() and not box.answered()  # still there, untaken
    assert h.vgpu.backend.syncs == before and unfloats(g.get(c, 4 * N)) == [1.0] * N


def test_a_launch_the_driver_refuses_is_reported_by_its_synchronise(turn):
    h, g, f, (b, c, d), session, box = turn
    served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    data = message(g, f, vadd_args(c, b, c, 13))  # n = 13: the fake driver refuses it
    box.post(b"", data)
    served, ring, reply = g.channel.serve_repeats(session)
    assert served == 0 and reply is not None
    (r,) = g._events(reply)
    assert (r.status, r.seq) == (OUT_OF_RESOURCES, seq_of_wait(data))
    assert h.vgpu.errors[Op.LAUNCH] == 1
    # the next one is the Python path's again (the turn is entered after a message that went fine)
    assert g.channel.serve_repeats(session) == (0, False, None)
    (r,) = served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    assert r.status == 0


def test_a_failed_synchronise_is_the_guests_error_and_breaks_the_context(turn):
    h, g, f, (b, c, d), session, box = turn
    served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    h.vgpu.backend.sync_error = ILLEGAL_ADDRESS
    data = message(g, f, vadd_args(c, b, c, N))
    box.post(b"", data)
    served, ring, reply = g.channel.serve_repeats(session)
    (r,) = g._events(reply)
    assert served == 0 and (r.status, r.seq) == (ILLEGAL_ADDRESS, seq_of_wait(data))
    assert b"cuCtxSynchronize" in r.blob
    assert h.vgpu.broken is not None  # a sticky error, as on the Python path
    box.post(b"", message(g, f, vadd_args(c, b, c, N)))
    assert g.channel.serve_repeats(session) == (0, False, None)  # not entered on a broken context


def test_a_guest_that_sleeps_is_rung(turn):
    h, g, f, (b, c, d), session, box = turn
    served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    box.post(b"", message(g, f, vadd_args(c, b, c, N)))
    assert not box.sleep()  # the guest says it blocks on the channel for the answer
    assert g.channel.serve_repeats(session) == (1, True, None)
    assert box.answered()


class FakeGate:
    def __init__(self, until: float):
        self.until, self.charged = until, []

    def clocked_until(self) -> float:
        return self.until

    def charge_clocked(self, seconds: float) -> None:
        self.charged.append(seconds)


def test_the_compute_gate_bounds_the_turn_and_is_charged_its_runs(turn, monkeypatch):
    import time
    h, g, f, (b, c, d), session, box = turn
    served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    gate = FakeGate(0.0)  # not now (another VM's slice, or a run the meter times by events)
    monkeypatch.setattr(h.vgpu, "gate", gate)
    box.post(b"", message(g, f, vadd_args(c, b, c, N)))
    assert g.channel.serve_repeats(session) == (0, False, None) and session.mailbox.posted()
    gate.until = time.monotonic() - 1  # the slice is over: left for the worker, which asks the gate
    assert g.channel.serve_repeats(session) == (0, False, None) and session.mailbox.posted()
    gate.until = time.monotonic() + 60
    assert g.channel.serve_repeats(session) == (1, False, None)
    assert len(gate.charged) == 1 and 0 < gate.charged[0] < 60


def test_hostile_posts_are_served_only_where_they_differ_in_the_seqs_and_argument_bytes(turn):
    """Fuzz: a repeat with 1-3 of its bytes changed, or cut, or grown. The turn serves it exactly
    when the changes are in the two sequence numbers or the argument bytes (whose size the
    worker checked); anything else is left untouched."""
    h, g, f, (b, c, d), session, box = turn
    served_by_python(g, session, box, message(g, f, vadd_args(c, b, c, N)))
    rng = random.Random(21)
    base = message(g, f, vadd_args(c, b, d, N))
    size = launch_size(base)
    args_at = size - len(vadd_args(c, b, d, N))
    free = set(range(8, 12)) | set(range(args_at, size)) | set(range(size + 8, size + 12))
    for i in range(300):
        data = bytearray(base)
        kind = rng.random()
        if kind < 0.1:
            data = data[:rng.randrange(1, len(data))]
        elif kind < 0.2:
            data += bytes(rng.randrange(1, 9))
        changed = set()
        if kind >= 0.2:
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(len(data))
                if args_at <= at < size:
                    continue  # argument bytes: a launch with other pointers is another test's
                data[at] ^= rng.randrange(1, 256)
                changed.add(at)
        repeat = len(data) == len(base) and changed <= free
        box.post(b"", bytes(data))
        served, ring, reply = g.channel.serve_repeats(session)
        assert (served == 1) == repeat, (i, sorted(changed), len(data))
        assert reply is None and not ring
        if not repeat:  # still posted: take it out of the way, as nothing happened
            assert session.mailbox.posted() and not box.answered()
            session.mailbox.number = box.number
    assert h.vgpu.broken is None and not h.vgpu.protocol_violations

"""A session's mailbox on the worker (`Channel.take_post`): what a guest posts is taken as the same
bytes on the channel would be, and only whole CALL frames of that session are: anything else is a
protocol violation that closes the channel, as on the channel itself."""

from __future__ import annotations

import pytest

from kvmgpu.worker import channel as channel_module
from kvmgpu_wire.mailbox import REQUEST_MAX, Mailbox, mailbox_at
from kvmgpu_wire.protocol import Doorbell, Hello, Op, RemoteProtocolError

from rawguest import unfloats
from test_launch_wait import N, make_host, message
from test_launcher import vadd_args


@pytest.fixture
def posting(tmp_path):
    """(host, guest, function, buffers, its session on the host, the guest's end of its mailbox)"""
    h, g, f, bufs = make_host(tmp_path, "a")
    session = h.vgpu.sessions[(g.channel.cid, g.session)]
    box = Mailbox(g.window.view, mailbox_at(g.window.size))
    yield h, g, f, bufs, session, box
    box.release()
    h.close()


def post(g, session, box, data: bytes):
    """Post `data`, take it and answer it in the mailbox (as the worker's loop does); the events of
    the answer the guest reads there."""
    box.post(b"", data)
    reply = g.channel.take_post(session)
    assert not box.answered()
    session.mailbox.answer(reply)
    assert box.answered()
    return g._events(box.answer_bytes())


def test_the_welcome_names_the_session_and_its_window_has_a_mailbox(posting):
    h, g, f, bufs, session, box = posting
    assert g.welcome.channel_session == g.session
    assert session.mailbox is not None and session in h.vgpu.boxed
    assert session.doorbell == g.conn.send(Doorbell(g.session))


def test_a_loop_of_posted_launch_and_wait_runs_like_one_on_the_channel(posting, monkeypatch):
    h, g, f, (b, c, d), session, box = posting
    runs = []
    launch_run = channel_module.launch_run
    monkeypatch.setattr(channel_module, "launch_run", lambda *a: runs.append(1) or launch_run(*a))
    assert g.channel.take_post(session) is None  # nothing posted
    for i in range(5):
        (r,) = post(g, session, box, message(g, f, vadd_args(c, b, (c, d)[i % 2], N)))
        assert r.status == 0
    assert runs == [1]  # taken again by comparison from the second on, as on the channel
    assert unfloats(g.get(c, 4 * N)) == [3.0] * N and unfloats(g.get(d, 4 * N)) == [3.0] * N
    assert h.vgpu.calls[Op.LAUNCH] == 5


def test_a_queued_error_posted_is_reported_by_the_posted_synchronise(posting):
    h, g, f, (b, c, d), session, box = posting
    bad = g.frame(Op.MEM_FREE, 0xDEAD, queued=True)
    (r,) = post(g, session, box, bad + g.frame(Op.CTX_SYNCHRONIZE))
    assert r.status != 0
    (r,) = post(g, session, box, g.frame(Op.CTX_SYNCHRONIZE))
    assert r.status == 0


def violation(h, g, session, box, data: bytes, match: str):
    other = h.guest(session=2, channel=g.channel)  # a second session on the channel
    box.post(b"", data)
    with pytest.raises(RemoteProtocolError, match=match):
        g.channel.take_post(session)
    assert g.channel.closed and h.vgpu.protocol_violations == 1
    assert not h.vgpu.sessions and not h.vgpu.boxed  # the channel's sessions ended, both
    del other


def test_a_post_with_frames_of_another_session_is_a_violation(posting):
    h, g, f, bufs, session, box = posting
    g.session = 2  # frames of session 2, posted to session 1's mailbox
    frame = g.frame(Op.CTX_SYNCHRONIZE)
    g.session = 1
    violation(h, g, session, box, frame, "session 2, which has not said HELLO")


def test_a_post_that_ends_inside_a_frame_is_a_violation(posting):
    h, g, f, bufs, session, box = posting
    violation(h, g, session, box, g.frame(Op.CTX_SYNCHRONIZE)[:-1], "ends inside a frame")


def test_a_hello_or_doorbell_posted_is_a_violation(posting):
    h, g, f, bufs, session, box = posting
    violation(h, g, session, box, g.conn.send(Hello(1)), "Hello posted to a mailbox")


def test_a_post_longer_than_the_mailbox_is_a_violation(posting):
    h, g, f, bufs, session, box = posting
    box.words[1] = REQUEST_MAX + 1
    box.words[0] += 1
    with pytest.raises(RemoteProtocolError, match="at most"):
        g.channel.take_post(session)
    assert g.channel.closed and h.vgpu.protocol_violations == 1


def test_a_doorbell_on_the_channel_is_answered_with_nothing(posting):
    h, g, f, bufs, session, box = posting
    assert g.channel.receive(g.conn.send(Doorbell(1))) == b""
    with pytest.raises(RemoteProtocolError, match="DOORBELL on session 9"):
        g.channel.receive(g.conn.send(Doorbell(9)))
    assert g.channel.closed and h.vgpu.protocol_violations == 1 and not h.vgpu.sessions


def test_a_doorbell_with_a_payload_is_a_violation(posting):
    h, g, f, bufs, session, box = posting
    with pytest.raises(RemoteProtocolError, match="DOORBELL with a 3-byte payload"):
        g.channel.receive(g.conn.send(Doorbell(1))[:12] + (3).to_bytes(4, "little") + b"abc")
    assert g.channel.closed and h.vgpu.protocol_violations == 1 and not h.vgpu.sessions


def test_a_window_taken_over_by_a_new_session_has_nothing_posted(posting):
    h, g, f, bufs, session, box = posting
    box.post(b"", g.frame(Op.CTX_SYNCHRONIZE))  # posted and never taken
    window = session.window.offset, session.window.size
    h.vgpu.end_session(session.key, "test")
    assert session.mailbox is None and not h.vgpu.boxed
    g2 = h.guest(window=1 << 20, session=5)
    new = h.vgpu.sessions[(g2.channel.cid, 5)]
    assert (new.window.offset, new.window.size) == window
    assert g2.channel.take_post(new) is None


def test_a_small_window_has_no_mailbox(tmp_path):
    h, g, f, bufs = make_host(tmp_path, "a")
    try:
        g2 = h.guest(window=32 * 1024, session=2, channel=g.channel)
        assert h.vgpu.sessions[(g2.channel.cid, 2)].mailbox is None
        assert g2.ok(Op.MEM_GET_INFO)
    finally:
        h.close()

"""The wire protocol in memory: a client and a host Connection joined with no sockets."""

from __future__ import annotations

import struct

import pytest

from kvmgpu_wire.protocol import (
    DEFAULT_MAX_FRAME,
    HANDSHAKE_MAX,
    HEADER,
    MAGIC,
    MAX_BUFFERED,
    NEED_DATA,
    OPS,
    PROTOCOL_VERSION,
    QUEUED,
    Call,
    Connection,
    Goodbye,
    Hello,
    Kind,
    LocalProtocolError,
    Op,
    RemoteProtocolError,
    Reply,
    Role,
    Welcome,
    negotiate,
    pack_params,
    unpack_params,
)


def pump(src_bytes: bytes, dst: Connection):
    dst.receive_data(src_bytes)
    events = []
    while (ev := dst.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


def handshaken():
    """(client, host) Connections after a handshake on session 7."""
    client, host = Connection(Role.CLIENT), Connection(Role.HOST)
    [hello] = pump(client.send(Hello(7, window=8192, client="t")), host)
    version, max_frame = negotiate(hello)
    [welcome] = pump(host.send(Welcome(7, version, max_frame, 0, 8192, {"name": "x"}, {})), client)
    assert isinstance(welcome, Welcome) and welcome.window_size == 8192
    return client, host


@pytest.fixture
def pair():
    return handshaken()


def frame(kind, payload: bytes, session=7, seq=1, flags=0, magic=MAGIC, length=None):
    return HEADER.pack(magic, kind, flags, session, seq, len(payload) if length is None else length) + payload


def call_payload(op: int, args, blob=b""):
    return struct.pack("<HH", op, len(args)) + b"".join(struct.pack("<Q", a) for a in args) + blob


def test_handshake_and_call_round_trip(pair):
    client, host = pair
    seq = client.next_seq()
    [call] = pump(client.send_call(7, seq, Op.MEM_ALLOC, (4096,)), host)
    assert call == Call(7, seq, Op.MEM_ALLOC, (4096,), b"", False)
    [reply] = pump(host.send_reply(7, seq, 0, (0x7F0000000000,), b"", Op.MEM_ALLOC), client)
    assert reply == Reply(7, seq, 0, (0x7F0000000000,), b"")


def test_reply_results_decode_by_op(pair):
    client, host = pair
    seq = client.next_seq()
    pump(client.send_call(7, seq, Op.EVENT_ELAPSED, (1, 2)), host)
    [reply] = pump(host.send_reply(7, seq, 0, (1.5,), b"", Op.EVENT_ELAPSED), client)
    assert reply.values == (1.5,)
    seq = client.next_seq()
    pump(client.send_call(7, seq, Op.MODULE_GET_FUNCTION, (1,), b"vector_add"), host)
    layout = [(0, 8), (8, 8), (16, 8), (24, 4)]
    [reply] = pump(host.send_reply(7, seq, 0, (5, 4), pack_params(layout), Op.MODULE_GET_FUNCTION), client)
    assert unpack_params(reply.blob, reply.values[1]) == layout


def test_error_reply_carries_text(pair):
    client, host = pair
    seq = client.next_seq()
    pump(client.send_call(7, seq, Op.MEM_ALLOC, (1 << 40,)), host)
    [reply] = pump(host.send_reply(7, seq, 2, (), b"over quota"), client)
    assert reply.status == 2 and reply.blob == b"over quota"


def test_queued_call_expects_no_reply(pair):
    client, host = pair
    seq = client.next_seq()
    [call] = pump(client.send_call(7, seq, Op.MEM_FREE, (1,), queued=True), host)
    assert call.queued and not client.expected(7, seq)


def test_frames_split_anywhere(pair):
    client, host = pair
    data = b"".join(client.send_call(7, client.next_seq(), Op.MEM_GET_INFO, ()) for _ in range(3))
    events = []
    for i in range(len(data)):
        events += pump(data[i:i + 1], host)
    assert [e.op for e in events] == [Op.MEM_GET_INFO] * 3


def test_negotiate():
    assert negotiate(Hello(1)) == (PROTOCOL_VERSION, DEFAULT_MAX_FRAME)
    assert negotiate(Hello(1, max_frame=8192)) == (PROTOCOL_VERSION, 8192)
    assert negotiate(Hello(1, max_frame=1 << 30))[1] == DEFAULT_MAX_FRAME
    with pytest.raises(RemoteProtocolError, match="protocol"):
        negotiate(Hello(1, version_min=PROTOCOL_VERSION + 1, version_max=PROTOCOL_VERSION + 2))
    with pytest.raises(RemoteProtocolError, match="minimum"):
        negotiate(Hello(1, max_frame=100))


def test_local_errors():
    client = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.send_call(1, 1, Op.MEM_ALLOC, ())
    with pytest.raises(LocalProtocolError):
        client.send_call(1, 1, Op.MEM_ALLOC, (1,), queued=True)
    with pytest.raises(LocalProtocolError):
        client.send_call(1, 1, Op.MODULE_LOAD, (0, 0), b"x" * 33)
    with pytest.raises(LocalProtocolError):
        client.send_call(1, 1, Op.MEM_ALLOC, (-1,))
    with pytest.raises(LocalProtocolError):
        Connection(Role.HOST).send(Hello(1))


def test_a_call_over_the_frame_limit_is_refused_and_leaves_nothing_awaited():
    client = Connection(Role.CLIENT, max_frame=4096)
    with pytest.raises(LocalProtocolError, match="over 4096"):
        client.send_call(1, 5, Op.LAUNCH, (1,) * 9, b"x" * 4096)
    assert not client.expected(1, 5)


MALFORMED = {
    "bad magic": lambda: frame(Kind.CALL, call_payload(Op.MEM_GET_INFO, ()), magic=0x1234),
    "oversized length": lambda: frame(Kind.CALL, b"", length=DEFAULT_MAX_FRAME + 1),
    "oversized hello": lambda: frame(Kind.HELLO, b"", length=HANDSHAKE_MAX + 1),
    "unknown kind": lambda: frame(99, b""),
    "unknown op": lambda: frame(Kind.CALL, call_payload(999, ())),
    "wrong arg count": lambda: frame(Kind.CALL, call_payload(Op.MEM_ALLOC, (1, 2))),
    "args cut short": lambda: frame(Kind.CALL, struct.pack("<HH", Op.MEM_ALLOC, 1)),
    "short op header": lambda: frame(Kind.CALL, b"\x02"),
    "oversized blob": lambda: frame(Kind.CALL, call_payload(Op.MODULE_LOAD, (0, 0), b"x" * 33)),
    "call before hello": lambda: frame(Kind.CALL, call_payload(Op.MEM_GET_INFO, ()), session=8),
    "queued non-queueable op": lambda: frame(Kind.CALL, call_payload(Op.MEM_ALLOC, (1,)), flags=QUEUED),
    "reply to the host": lambda: frame(Kind.REPLY, struct.pack("<i", 0)),
    "welcome to the host": lambda: frame(Kind.WELCOME, b"{}"),
    "hello not json": lambda: frame(Kind.HELLO, b"\xff{"),
    "hello not an object": lambda: frame(Kind.HELLO, b"[1]"),
    "hello unknown field": lambda: frame(Kind.HELLO, b'{"version_min":1,"version_max":1,"evil":1}'),
    "hello negative field": lambda: frame(Kind.HELLO, b'{"version_min":1,"version_max":1,"window":-1}'),
    "hello wrong type": lambda: frame(Kind.HELLO, b'{"version_min":"1","version_max":1}'),
    "hello missing field": lambda: frame(Kind.HELLO, b'{"version_max":1}'),
    "hello nested deep": lambda: frame(Kind.HELLO, b"[" * 5000),  # RecursionError in json
    "hello nested deep, closed": lambda: frame(Kind.HELLO, b"[" * 5000 + b"]" * 5000),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_frames_are_remote_errors(pair, name):
    _, host = pair
    with pytest.raises(RemoteProtocolError):
        pump(MALFORMED[name](), host)


STREAM_WAIT = call_payload(Op.STREAM_SYNCHRONIZE, (5,))
WAITS = {  # frame -> what take_wait makes of it (None: left to next_event)
    "stream synchronise": (frame(Kind.CALL, STREAM_WAIT, seq=3), (7, 3, Op.STREAM_SYNCHRONIZE, 5)),
    "context synchronise": (frame(Kind.CALL, call_payload(Op.CTX_SYNCHRONIZE, ()), seq=4),
                            (7, 4, Op.CTX_SYNCHRONIZE, 0)),
    "queued": (frame(Kind.CALL, STREAM_WAIT, flags=QUEUED), None),
    "another flag bit": (frame(Kind.CALL, STREAM_WAIT, flags=0x80), None),
    "with a blob": (frame(Kind.CALL, STREAM_WAIT + b"x"), None),
    "no stream": (frame(Kind.CALL, call_payload(Op.STREAM_SYNCHRONIZE, ())), None),
    "a context synchronise with an arg": (frame(Kind.CALL, call_payload(Op.CTX_SYNCHRONIZE, (1,))), None),
    "before hello": (frame(Kind.CALL, STREAM_WAIT, session=8), None),
    "bad magic": (frame(Kind.CALL, STREAM_WAIT, magic=0x1234), None),
    "another op": (frame(Kind.CALL, call_payload(Op.MEM_GET_INFO, ())), None),
    "half a frame": (frame(Kind.CALL, STREAM_WAIT)[:24], None),
}


@pytest.mark.parametrize("name", sorted(WAITS))
def test_take_wait_takes_exactly_the_well_formed_synchronise_calls(pair, name):
    """The worker's fast decode of a synchronise (take_wait) takes a frame only when next_event
    would decode it to the same call, and leaves every other frame, byte for byte, to
    next_event's checks (which refuse the malformed ones)."""
    _, host = pair
    data, want = WAITS[name]
    host.receive_data(data)
    assert host.take_wait() == want
    if want is not None:
        assert host.drained()
        _, general = handshaken()
        (call,) = pump(data, general)
        assert (call.session, call.seq, call.op, (call.args or (0,))[0]) == want and not call.queued
        return
    try:
        event = host.next_event()
    except RemoteProtocolError:
        return
    assert event is NEED_DATA or isinstance(event, Call)  # the frame was still there


def test_buffer_limit():
    host = Connection(Role.HOST)
    with pytest.raises(RemoteProtocolError, match="undecoded"):
        host.receive_data(b"\0" * (MAX_BUFFERED + 1))


def test_client_refuses_unawaited_reply(pair):
    client, _ = pair
    with pytest.raises(RemoteProtocolError, match="not awaited"):
        pump(frame(Kind.REPLY, struct.pack("<i", 0), seq=99), client)


def test_goodbye_ends_session(pair):
    client, host = pair
    [bye] = pump(client.send(Goodbye(7, "done")), host)
    assert bye == Goodbye(7, "done")
    with pytest.raises(RemoteProtocolError, match="HELLO"):
        pump(frame(Kind.CALL, call_payload(Op.MEM_GET_INFO, ())), host)


def test_every_op_has_a_spec():
    assert set(OPS) == set(Op)
    for op, spec in OPS.items():
        assert not (spec.queueable and spec.results), f"{op.name}: a queued op cannot return results"

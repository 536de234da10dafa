"""The wire protocol with no sockets: a client and a host Connection joined in memory."""

from kvmgpu_wire.protocol import (
    NEED_DATA,
    Connection,
    Hello,
    Op,
    Reply,
    Role,
    Welcome,
    negotiate,
    pack_params,
    unpack_params,
)


def pump(src_bytes: bytes, dst: Connection) -> list:
    dst.receive_data(src_bytes)
    events = []
    while (ev := dst.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


def handshake(client: Connection, host: Connection, session: int = 7) -> Welcome:
    (hello,) = pump(client.send(Hello(session, client="t")), host)
    assert isinstance(hello, Hello) and hello.session == session
    version, max_frame = negotiate(hello)
    (welcome,) = pump(host.send(Welcome(session, version, max_frame, 4096, 65536,
                                        {"name": "x"}, {"gmem": 1})), client)
    return welcome


def test_handshake_caches_device_and_window():
    client, host = Connection(Role.CLIENT), Connection(Role.HOST)
    welcome = handshake(client, host)
    assert welcome.device == {"name": "x"} and welcome.window_offset == 4096 and welcome.window_size == 65536


def test_replies_pair_with_calls_and_decode_by_op():
    client, host = Connection(Role.CLIENT), Connection(Role.HOST)
    handshake(client, host)
    wire = client.send_call(7, 1, Op.MEM_ALLOC, (4096,)) + client.send_call(7, 2, Op.MEM_GET_INFO, ())
    alloc, info = pump(wire, host)
    assert (alloc.op, alloc.args, info.op) == (Op.MEM_ALLOC, (4096,), Op.MEM_GET_INFO)
    # answered out of order: each reply still decodes by the op it answers
    out = host.send_reply(7, 2, 0, (100, 200), op=Op.MEM_GET_INFO) + \
        host.send_reply(7, 1, 0, (0xABC000,), op=Op.MEM_ALLOC)
    r_info, r_alloc = pump(out, client)
    assert r_info == Reply(7, 2, 0, (100, 200), b"")
    assert r_alloc.values == (0xABC000,)


def test_queued_calls_get_no_reply_and_keep_their_order():
    client, host = Connection(Role.CLIENT), Connection(Role.HOST)
    handshake(client, host)
    wire = b"".join(client.send_call(7, i, Op.MEM_FREE, (0x1000 * i,), queued=True) for i in range(1, 4))
    wire += client.send_call(7, 4, Op.CTX_SYNCHRONIZE, ())
    events = pump(wire, host)
    assert [e.queued for e in events] == [True, True, True, False]
    assert [e.args[0] for e in events[:3]] == [0x1000, 0x2000, 0x3000]
    assert not client.expected(7, 1) and client.expected(7, 4)
    # the error of a queued call comes back on the synchronising call
    (reply,) = pump(host.send_reply(7, 4, 1), client)
    assert reply.status == 1


def test_param_table_round_trip():
    layout = [(0, 8), (8, 4), (16, 8)]
    assert unpack_params(pack_params(layout), 3) == layout

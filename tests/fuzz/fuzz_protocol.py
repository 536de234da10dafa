"""Fuzz harness: the wire protocol's decoder (kvmgpu_wire/protocol.py), host side, fed a guest's bytes.

    python tests/fuzz/fuzz_protocol.py -max_total_time=600 tests/fuzz/corpus/protocol

An input is `mode byte | split seed byte | the bytes a guest writes`. The bytes are decoded four
ways, and all four must give the same messages and stop at the same violation:

  - whole: received at once, decoded by `next_event` only (the reference);
  - split: received in random pieces (1..64 bytes, from the seed), decoded by `next_event`;
  - fast: split, with the worker's hot paths as events (`next_event(256)`: LaunchRun, Wait), as `Channel`;
  - repeats: fast, with `take_launches` handing over repeated launches through the C
    `count_repeats` (kvmgpu/backend/launcher.c), as the worker does on the cuda backend.

A HELLO is answered as the worker answers it (`negotiate`, then WELCOME or GOODBYE), so calls of
that session are taken after it. Mode bit 0 decodes as a session's mailbox does (one session
known from the start, no handshake). Every call decoded is sent again by a client `Connection`
and must decode to itself. Any exception but `RemoteProtocolError` is a finding.
"""

from __future__ import annotations

import random
import sys

if __name__ == "__main__":  # instrument the code under test before anything imports it
    import atheris
    with atheris.instrument_imports(include=["kvmgpu_guest", "kvmgpu"]):
        import kvmgpu.backend.launcher  # noqa: F401
        import kvmgpu_wire.protocol  # noqa: F401

from kvmgpu_wire.protocol import (
    HEADER_SIZE,
    LAUNCH_BODY,
    NEED_DATA,
    Call,
    Connection,
    Doorbell,
    Goodbye,
    Hello,
    LaunchRun,
    RemoteProtocolError,
    Role,
    Wait,
    Welcome,
    launch_seq,
    negotiate,
)

try:
    from kvmgpu.backend import launcher
    COUNT_REPEATS = launcher.load().count_repeats
except OSError:  # the C module is not built: the repeats path is the fast path without it
    COUNT_REPEATS = None

MAILBOX_SESSION = 7  # the session a mailbox-mode decoder knows


def _answer_hello(conn: Connection, hello: Hello) -> tuple:
    """What the worker does with a HELLO (Channel._hello, without the vGPU): the event as seen."""
    try:
        version, max_frame = negotiate(hello)
    except RemoteProtocolError as e:
        conn.send(Goodbye(hello.session, str(e)))
        return ("hello-refused", hello.session)
    conn.send(Welcome(hello.session, version, max_frame, 0, 1 << 20, {}, {}, hello.session))
    return ("hello", hello.session, hello.max_frame, hello.window, hello.client)


def _event(conn: Connection, ev) -> tuple:
    if type(ev) is Call:
        return ("call", ev.session, ev.seq, int(ev.op), ev.args, ev.blob, ev.queued)
    if isinstance(ev, Hello):
        return _answer_hello(conn, ev)
    if isinstance(ev, Goodbye):
        return ("goodbye", ev.session, ev.reason)
    if isinstance(ev, Doorbell):
        return ("doorbell", ev.session)
    raise AssertionError(f"the host decoded a {type(ev).__name__}")


def _taken_launches(conn: Connection, launches) -> list:
    """`take_launches`' answer as calls (each repeat too: its seq and argument bytes)."""
    out, buf = [], conn.buffer
    for t, start, more in launches:
        nbytes = t[5] - LAUNCH_BODY
        stride = HEADER_SIZE + t[5]
        for k in range(1 + more):
            at = start + k * stride
            out.append(("call", t[3], launch_seq(buf, at), 14, tuple(t[8:17]),
                        bytes(buf[at: at + nbytes]), True))
    return out


def decode(data: bytes, mailbox: bool, pieces: list[int] | None, fast: bool, repeats=None):
    """(events, error text or None) of decoding `data`."""
    conn = Connection(Role.HOST, sessions=(MAILBOX_SESSION,) if mailbox else ())
    events: list = []
    chunks = [data] if pieces is None else []
    pos = 0
    for n in pieces or ():
        if pos >= len(data):
            break
        chunks.append(data[pos: pos + n])
        pos += n
    if pieces is not None and pos < len(data):
        chunks.append(data[pos:])
    try:
        for chunk in chunks:
            if not chunk:
                continue
            conn.receive_data(chunk)
            while True:
                ev = conn.next_event(256, repeats) if fast else conn.next_event()
                if ev is NEED_DATA:
                    break
                if type(ev) is LaunchRun:
                    events += _taken_launches(conn, ev.launches)
                elif type(ev) is Wait:
                    sid, seq, op, stream = ev
                    events.append(("call", sid, seq, int(op), (stream,) if op == 17 else (), b"", False))
                else:
                    events.append(_event(conn, ev))
    except RemoteProtocolError as e:
        return events, str(e)
    return events, None


def _round_trip(events: list) -> None:
    """Every call decoded, sent again by a client, decodes to itself."""
    for e in events:
        if e[0] != "call":
            continue
        _, session, seq, op, args, blob, queued = e
        frame = Connection(Role.CLIENT, max_frame=1 << 24).send_call(session, seq, op, args, blob, queued)
        host = Connection(Role.HOST, max_frame=1 << 24, sessions=(session,))
        host.receive_data(frame)
        ev = host.next_event()
        again = ("call", ev.session, ev.seq, int(ev.op), ev.args, ev.blob, ev.queued)
        assert again == e, (again, e)
        assert host.drained()


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, seed, stream = data[0], data[1], data[2:]
    mailbox = bool(mode & 1)
    rng = random.Random(seed)
    pieces = [rng.randint(1, 64) for _ in range(len(stream))]
    whole = decode(stream, mailbox, None, False)
    split = decode(stream, mailbox, pieces, False)
    assert split == whole, f"split differently: {split} != {whole}"
    fast = decode(stream, mailbox, pieces, True)
    assert fast == whole, f"the hot paths decoded differently: {fast} != {whole}"
    if COUNT_REPEATS is not None:
        rep = decode(stream, mailbox, pieces, True, COUNT_REPEATS)
        assert rep == whole, f"count_repeats decoded differently: {rep} != {whole}"
    _round_trip(whole[0])


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

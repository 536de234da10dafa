"""kvmgpu's wire protocol, with no I/O in it.

A `Connection` takes bytes (`receive_data`) and hands back typed messages (`next_event`); `send`
turns a message into bytes. Transports (a unix socket, a virtio-serial port) and the shared-memory
region live elsewhere. The host imports this module: it is the single source of truth.

Frame: a 16-byte header, then `length` bytes of payload.

    magic u16 | kind u8 | flags u8 | session u32 | seq u32 | length u32      (little-endian)

Kinds: HELLO and WELCOME (the handshake, JSON payloads), CALL (op u16, nargs u16, nargs x u64,
then a small blob), REPLY (status i32, the op's fixed results, then a small blob), GOODBYE, and
DOORBELL (no payload: look at the session's mailbox, kvmgpu_wire/mailbox.py).
A CALL with the QUEUED flag gets no reply; if it fails, its error is reported by the next
synchronising call of the same session, the way CUDA reports asynchronous errors.

Bulk bytes never travel in frames: they go through the session's window of the shared region and
a call names only (offset, length) inside that window.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Union

from .ops import (  # noqa: F401
    CALL_HEAD_FORMAT,
    DEFAULT_MAX_FRAME,
    HANDSHAKE_MAX,
    HEADER_FORMAT,
    MAGIC,
    MAX_ARG_BYTES,
    MAX_ERROR_TEXT,
    MAX_NAME,
    PARAM_FORMAT,
    PROTOCOL_VERSION,
    QUEUED,
    TABLE,
    WINDOW_ALIGN,
    Kind,
    Op,
)

HEADER = struct.Struct(HEADER_FORMAT)
HEADER_SIZE = HEADER.size  # 16

MIN_MAX_FRAME = 4096  # the smallest max_frame a session may negotiate
MAX_BUFFERED = 16 << 20  # undecoded bytes a Connection holds before it refuses more


class ProtocolError(Exception):
    """Base of protocol violations."""


class LocalProtocolError(ProtocolError):
    """This side tried to send something the protocol does not allow (a bug here)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or out of limits; the channel should be closed."""


@dataclass(frozen=True)
class OpSpec:
    """What one op carries. `args` are u64s; `results` is the struct format of a success reply.

    `blob` is the most blob bytes a call may carry. `synchronising` ops report the error of an
    earlier queued call. `queueable` ops may be sent with the QUEUED flag.
    """

    args: tuple[str, ...]
    results: str = ""
    blob: int = 0
    queueable: bool = False
    synchronising: bool = False
    call_struct: struct.Struct = field(init=False, repr=False, compare=False)
    result_struct: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "call_struct", struct.Struct("<HH" + "Q" * len(self.args)))
        object.__setattr__(self, "result_struct", struct.Struct("<" + self.results))


# The op table, from the specification (kvmgpu_wire/spec.py, generated into kvmgpu_wire/ops.py).
OPS: dict[Op, OpSpec] = {op: OpSpec(args, results, blob, queueable, synchronising)
                         for op, (args, results, blob, queueable, synchronising) in TABLE.items()}
MAX_PIECES = 16  # the most pieces one MEMCPY_DTOH_PIECES is split into

_OP_SPECS: dict[int, tuple[Op, OpSpec]] = {int(op): (op, spec) for op, spec in OPS.items()}
# A CALL's header, op header and args in one struct, per op (Connection.send_call).
_CALL_FRAMES = {op: struct.Struct("<HBBIIIHH" + "Q" * len(spec.args)) for op, spec in OPS.items()}
# A success REPLY's header, status and results in one struct, per op (Connection.send_reply).
_REPLY_STRUCTS = {op: struct.Struct("<HBBIIIi" + spec.results) for op, spec in OPS.items()}
_new_tuple = tuple.__new__  # a NamedTuple made without its Python-level __new__
_NONE = ()  # take_launches' answer when no launch frame can be whole
# A QUEUED LAUNCH frame's header, op header and nine args in one struct (Connection.take_launches).
_LAUNCH_HEAD = struct.Struct("<HBBIIIHH9Q")
_LAUNCH_FIXED = _LAUNCH_HEAD.size  # 92
_LAUNCH_BODY = _LAUNCH_FIXED - 16  # op header + args: the shortest LAUNCH payload
LAUNCH_BODY = _LAUNCH_BODY  # (a LAUNCH's parameter bytes are its payload length less this)
_SEQ_AT = 8  # where a frame's sequence number is (HEADER: magic, kind, flags, session, seq, length)
_SEQ = struct.Struct("<I")
_KIND_HELLO, _KIND_WELCOME, _KIND_CALL, _KIND_REPLY = 1, 2, 3, 4  # Kind's values, as plain ints
_OP_LAUNCH = 14
# A synchronise call as take_wait reads it: header and op header, then a STREAM_SYNCHRONIZE's stream
_WAIT_HEAD = struct.Struct("<HBBIIIHH")
_WAIT_STREAM = struct.Struct("<Q")
_CTX_WAIT_SIZE = _WAIT_HEAD.size  # a whole CTX_SYNCHRONIZE frame (20 bytes, payload 4)
_STREAM_WAIT_SIZE = _WAIT_HEAD.size + _WAIT_STREAM.size  # a whole STREAM_SYNCHRONIZE (28, payload 12)
_OP_CTX_SYNCHRONIZE, _OP_STREAM_SYNCHRONIZE = 1, 17
_U16 = struct.Struct("<HH")
_STATUS = struct.Struct("<i")
PARAM = struct.Struct(PARAM_FORMAT)  # one kernel parameter: offset, size


class LaunchWaitShape(NamedTuple):
    """A launch + synchronise message as the host saw it, less its two sequence numbers and the
    launch's parameter bytes (`Connection.launch_wait_shape`, `Connection.take_launch_wait`)."""

    launch_head: bytes  # the launch frame's bytes before its seq
    launch_tail: bytes  # ... after its seq, to its parameter bytes (op header, nine args)
    launch_size: int  # the whole launch frame
    wait_head: bytes  # the synchronise frame's bytes before its seq
    wait_tail: bytes  # ... after it
    size: int  # the whole message


# ---------------------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class Hello:
    """Client -> host, first frame of a session. `window` asks for that many bytes of the region
    (0: all that is free). `pid`: the guest process's id (what the guest's NVML lists it by);
    `role`: "monitor" for a session that only asks about the vGPU (the guest's NVML), which the
    VM's process list leaves out."""

    session: int
    version_min: int = PROTOCOL_VERSION
    version_max: int = PROTOCOL_VERSION
    max_frame: int = DEFAULT_MAX_FRAME
    window: int = 0
    client: str = ""
    pid: int = 0
    role: str = ""

    _FIELDS = {"version_min": int, "version_max": int, "max_frame": int, "window": int, "client": str,
               "pid": int, "role": str}


@dataclass(frozen=True)
class Welcome:
    """Host -> client: the negotiated version and limits, the session's window of the shared
    region, and the vGPU as the guest should see it (device properties are cached by the guest)."""

    session: int
    version: int
    max_frame: int
    window_offset: int
    window_size: int
    device: dict
    vgpu: dict
    # the session's number on the channel (a guest agent renumbers sessions on their way through;
    # frames posted to the mailbox bypass it and carry this number); 0: the frame header's
    channel_session: int = 0

    _FIELDS = {"version": int, "max_frame": int, "window_offset": int, "window_size": int,
               "device": dict, "vgpu": dict, "channel_session": int}


class Call(NamedTuple):
    session: int
    seq: int
    op: Op
    args: tuple
    blob: bytes = b""
    queued: bool = False


class Reply(NamedTuple):
    session: int
    seq: int
    status: int
    values: tuple = ()
    blob: bytes = b""


@dataclass(frozen=True)
class Goodbye:
    session: int
    reason: str = ""


@dataclass(frozen=True)
class Doorbell:
    """Either way: the sender posted to the session's mailbox (guest) or answered there (host)
    while the other side said it sleeps."""

    session: int


class LaunchRun(NamedTuple):
    """Host side, the hot path as an event: a run of well-formed QUEUED LAUNCH frames, decoded in
    place (`Connection.take_launches`' triples, their parameter bytes in `Connection.buffer`)."""

    launches: Sequence[tuple]


class Wait(NamedTuple):
    """Host side, the hot path's other half as an event: a whole STREAM_SYNCHRONIZE or
    CTX_SYNCHRONIZE call (stream 0), decoded in place (`Connection.take_wait`)."""

    session: int
    seq: int
    op: Op
    stream: int


class _NeedData:
    def __repr__(self):
        return "NEED_DATA"


NEED_DATA = _NeedData()
Message = Union[Hello, Welcome, Call, Reply, Goodbye, Doorbell]


def _json_payload(msg, fields: dict) -> bytes:
    return json.dumps({k: getattr(msg, k) for k in fields}, separators=(",", ":")).encode()


def _parse_json(cls, session: int, payload: bytes):
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RemoteProtocolError(f"{cls.__name__}: payload is not JSON ({e})") from None
    except RecursionError:  # JSON nested deeper than the parser's stack (a few [ per byte is cheap)
        raise RemoteProtocolError(f"{cls.__name__}: payload nests too deep") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{cls.__name__}: payload is not a JSON object")
    unknown = set(obj) - set(cls._FIELDS)
    if unknown and cls is Hello:  # the host is strict with what a guest sends
        raise RemoteProtocolError(f"Hello: unknown fields {sorted(unknown)}")
    kw = {}
    for name, typ in cls._FIELDS.items():
        if name not in obj:
            if (cls is Hello and name in ("window", "client", "max_frame", "pid", "role")
                    or cls is Welcome and name == "channel_session"):
                continue
            raise RemoteProtocolError(f"{cls.__name__}: missing field {name!r}")
        value = obj[name]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise RemoteProtocolError(f"{cls.__name__}: field {name!r} must be {typ.__name__}")
        if typ is int and value < 0:
            raise RemoteProtocolError(f"{cls.__name__}: field {name!r} must not be negative")
        kw[name] = value
    return cls(session=session, **kw)


# -------------------------------------------------------------------------------------- connection

class Role(enum.Enum):
    CLIENT = "client"  # the guest side
    HOST = "host"  # the worker side


class Connection:
    """One channel, either side. Sessions (guest processes) share it; each says HELLO first.

    The host side enforces: frame sizes against the negotiated limit, the op table (arg counts,
    blob sizes, which ops may be queued), and that calls come only on sessions that said HELLO.
    The client side pairs each REPLY with the call it answers so results decode by their op.
    """

    def __init__(self, role: Role, max_frame: int = DEFAULT_MAX_FRAME, sessions=()):
        self.role = role
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        # sessions past HELLO (host) or WELCOME (client); `sessions`: a host side that takes calls
        # of these sessions only (a session's mailbox) and no handshake
        self._sessions: set[int] = set(sessions)
        # host: each session's negotiated max_frame (its WELCOME's); `max_frame` is the ceiling
        # and the limit of a session with none (a frame of another session never counts)
        self._limits: dict[int, int] = {}
        self._pending: dict[tuple[int, int], Op] = {}  # client: (session, seq) -> op awaiting reply
        self._seq = 0
        self.closed = False

    # --- receiving -------------------------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview) -> None:
        if not data:
            self.closed = True
            return
        if self._pos and self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        if len(self._buf) - self._pos > MAX_BUFFERED:
            raise RemoteProtocolError(
                f"more than {MAX_BUFFERED} undecoded bytes: read frames with next_event() as they arrive")

    def next_event(self, launches: int = 0, repeats=None):
        """The next whole message, or NEED_DATA. Raises RemoteProtocolError on a malformed frame.

        Host side, with `launches`: the hot paths come out as events of their own, decoded in place
        and checked as every frame is: a run of QUEUED LAUNCH frames at the head as one `LaunchRun`
        (at most `launches` of them, `repeats` as for `take_launches`), a synchronise as a `Wait`;
        anything else as below. The worker's Channel reads its bytes this way only."""
        if launches:
            run = self.take_launches(launches, repeats)
            if run:
                return LaunchRun(run)
            waited = self.take_wait()
            if waited is not None:
                return Wait(*waited)
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_SIZE:
            return NEED_DATA
        magic, kind, flags, session, seq, length = HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise RemoteProtocolError(f"bad frame magic 0x{magic:04x}")
        if kind == _KIND_HELLO or kind == _KIND_WELCOME:
            limit = HANDSHAKE_MAX
        else:
            limit = self._limits.get(session, self.max_frame)
        if length > limit:
            raise RemoteProtocolError(f"frame of {length} bytes is over the limit of {limit}")
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            return NEED_DATA
        self._pos = end
        if kind == _KIND_CALL:  # the host's common case: decoded where it lies, no payload copy
            return self._parse_call(flags, session, seq, buf, pos + HEADER_SIZE, length)
        if kind == _KIND_REPLY:  # the client's common case, likewise
            return self._parse_reply(session, seq, buf, pos + HEADER_SIZE, length)
        payload = bytes(buf[pos + HEADER_SIZE: end])
        if kind == Kind.HELLO:
            if self.role is not Role.HOST:
                raise RemoteProtocolError("HELLO sent to a client")
            # A HELLO on a live session (a restarted guest agent) ends the old one: the host
            # releases what it held before it answers.
            return _parse_json(Hello, session, payload)
        if kind == Kind.WELCOME:
            if self.role is not Role.CLIENT:
                raise RemoteProtocolError("WELCOME sent to the host")
            welcome = _parse_json(Welcome, session, payload)
            self._sessions.add(session)
            return welcome
        if kind == Kind.GOODBYE:
            self._sessions.discard(session)
            self._limits.pop(session, None)
            return Goodbye(session, payload[:MAX_ERROR_TEXT].decode("utf-8", "replace"))
        if kind == Kind.DOORBELL:
            if length:
                raise RemoteProtocolError(f"DOORBELL with a {length}-byte payload")
            if self.role is Role.HOST and session not in self._sessions:
                raise RemoteProtocolError(f"DOORBELL on session {session}, which has not said HELLO")
            return Doorbell(session)
        raise RemoteProtocolError(f"unknown frame kind {kind}")

    def drained(self) -> bool:
        """Whether every byte received so far has been decoded."""
        return self._pos == len(self._buf)

    @property
    def buffer(self) -> bytearray:
        """The bytes received and not yet dropped (where `take_launches` points)."""
        return self._buf

    def take_launches(self, limit: int = 256, repeats=None) -> Sequence[tuple]:
        """Host side, the hot path: the run of well-formed QUEUED LAUNCH frames at the head of the
        buffer (at most `limit` launches), each as `(fields, start, more)`: `fields` the frame's
        header, op header and nine args as one 17-tuple (`_LAUNCH_HEAD`: magic, kind, flags,
        session, seq, length, op, nargs, function, gx, gy, gz, bx, by, bz, shared, stream), `start`
        where its parameter bytes (`length - LAUNCH_BODY` of them) begin in `buffer`, which holds
        them until the next `receive_data`, and `more` how many frames right after it repeat it
        (0 without `repeats`). Decoded in place with one struct per frame, nothing copied. It stops
        at the first frame that is anything else, is not whole yet, or breaks any rule
        `next_event` enforces, and leaves that frame to `next_event` (which checks it and raises,
        or decodes it the general way). So the checks are the same on both paths.

        `repeats` (the worker's C `count_repeats`, kvmgpu/backend/launcher.c) counts the whole
        frames after a taken one that are equal to it in every byte of their first
        `_LAUNCH_FIXED` but the sequence number's: the same session, flags, length, function,
        shape and stream, so the same outcome of every check here and in the worker; only their
        sequence numbers (`launch_seq`) and argument bytes (one frame, `HEADER_SIZE + length`,
        apart) differ. They are consumed with it and not decoded at all.
        """
        buf, pos = self._buf, self._pos
        end_buf = len(buf)
        if end_buf - pos < _LAUNCH_FIXED:
            return _NONE
        out = []
        sessions = self._sessions
        max_frame, limits = self.max_frame, self._limits
        unpack = _LAUNCH_HEAD.unpack_from
        taken = 0
        while taken < limit and end_buf - pos >= _LAUNCH_FIXED:
            t = unpack(buf, pos)
            magic, kind, flags, session, seq, length, opnum, nargs = t[:8]
            end = pos + HEADER_SIZE + length
            if (magic != MAGIC or kind != _KIND_CALL or not flags & QUEUED or opnum != _OP_LAUNCH
                    or nargs != 9 or end > end_buf
                    or (length > MIN_MAX_FRAME and length > limits.get(session, max_frame))
                    or length < _LAUNCH_BODY or length - _LAUNCH_BODY > MAX_ARG_BYTES
                    or session not in sessions):
                break
            more = 0
            if repeats is not None and taken + 1 < limit:
                more = repeats(buf, pos, end - pos, _LAUNCH_FIXED, _SEQ_AT, 4, limit - taken - 1)
            out.append((t, pos + _LAUNCH_FIXED, more))
            taken += 1 + more
            pos = end + more * (end - pos)
        self._pos = pos
        return out

    def take_wait(self):
        """Host side, the hot path's other half (a launch + synchronise message): the frame at the
        head of the buffer if it is a whole STREAM_SYNCHRONIZE or CTX_SYNCHRONIZE call, not queued
        and with no blob, on a session past HELLO, as `(session, seq, op, stream)` (stream 0 for
        CTX_SYNCHRONIZE), decoded in place and consumed; None for anything else, which stays for
        `next_event`. Every frame it takes passes `next_event`'s checks too (it is stricter: no
        flag bits at all), so both paths take the same frames the same way."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < _CTX_WAIT_SIZE:
            return None
        magic, kind, flags, session, seq, length, opnum, nargs = _WAIT_HEAD.unpack_from(buf, pos)
        if magic != MAGIC or kind != _KIND_CALL or flags or session not in self._sessions:
            return None
        if (opnum == _OP_STREAM_SYNCHRONIZE and nargs == 1 and length == _STREAM_WAIT_SIZE - HEADER_SIZE
                and len(buf) - pos >= _STREAM_WAIT_SIZE):
            self._pos = pos + _STREAM_WAIT_SIZE
            return session, seq, Op.STREAM_SYNCHRONIZE, _WAIT_STREAM.unpack_from(buf, pos + _CTX_WAIT_SIZE)[0]
        if opnum == _OP_CTX_SYNCHRONIZE and nargs == 0 and length == _CTX_WAIT_SIZE - HEADER_SIZE:
            self._pos = pos + _CTX_WAIT_SIZE
            return session, seq, Op.CTX_SYNCHRONIZE, 0
        return None

    def launch_wait_shape(self, start: int) -> "LaunchWaitShape":
        """Host side, after a message of one QUEUED LAUNCH frame (its parameter bytes at `start`,
        as `take_launches` gave it) and one synchronise (`take_wait`) that ended the bytes
        received: the bytes a later message must have to be the same launch and synchronise
        (`take_launch_wait`)."""
        buf = self._buf
        at = start - _LAUNCH_FIXED
        length, = _SEQ.unpack_from(buf, at + _SEQ_AT + 4)
        wait = at + HEADER_SIZE + length
        return LaunchWaitShape(bytes(buf[at: at + _SEQ_AT]), bytes(buf[at + _SEQ_AT + 4: start]),
                               HEADER_SIZE + length, bytes(buf[wait: wait + _SEQ_AT]),
                               bytes(buf[wait + _SEQ_AT + 4:]), len(buf) - at)

    def take_launch_wait(self, shape: "LaunchWaitShape"):
        """Host side, the hottest path (a loop of launch + synchronise): if the bytes received
        and not yet decoded are exactly one message of `shape` -- the same launch frame in every
        byte but its sequence number and its parameter bytes, then the same synchronise frame in
        every byte but its sequence number -- consume them and give `(start, seq, wait_seq)`:
        where the launch's parameter bytes start in `buffer`, and the two sequence numbers.
        Otherwise None, and nothing is consumed. Equal bytes are the same session, op, flags,
        lengths, function, shape and stream as a message `take_launches` and `take_wait`
        accepted, so the same outcome of their checks (the caller answers for the tables)."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos != shape.size:
            return None
        wait = pos + shape.launch_size
        if (buf[pos + _SEQ_AT + 4: pos + _LAUNCH_FIXED] != shape.launch_tail
                or buf[pos: pos + _SEQ_AT] != shape.launch_head
                or buf[wait + _SEQ_AT + 4: pos + shape.size] != shape.wait_tail
                or buf[wait: wait + _SEQ_AT] != shape.wait_head):
            return None
        self._pos = pos + shape.size
        return (pos + _LAUNCH_FIXED, _SEQ.unpack_from(buf, pos + _SEQ_AT)[0],
                _SEQ.unpack_from(buf, wait + _SEQ_AT)[0])

    def _parse_call(self, flags: int, session: int, seq: int, buf: bytearray, start: int,
                    length: int) -> Call:
        """The CALL whose `length` payload bytes start at `buf[start]` (the blob is copied out)."""
        if self.role is not Role.HOST:
            raise RemoteProtocolError("CALL sent to a client")
        if session not in self._sessions:
            raise RemoteProtocolError(f"CALL on session {session}, which has not said HELLO")
        if length < 4:
            raise RemoteProtocolError("CALL payload shorter than its op header")
        opnum, nargs = _U16.unpack_from(buf, start)
        entry = _OP_SPECS.get(opnum)
        if entry is None:
            raise RemoteProtocolError(f"unknown op {opnum}")
        op, spec = entry
        if nargs != len(spec.args):
            raise RemoteProtocolError(f"{op.name} takes {len(spec.args)} args, got {nargs}")
        cs = spec.call_struct
        fixed = cs.size
        if length < fixed:
            raise RemoteProtocolError(f"{op.name}: payload shorter than its args")
        if length - fixed > spec.blob:
            raise RemoteProtocolError(f"{op.name}: blob of {length - fixed} bytes, limit {spec.blob}")
        queued = flags & QUEUED
        if queued and not spec.queueable:
            raise RemoteProtocolError(f"{op.name} cannot be queued")
        blob = bytes(buf[start + fixed: start + length]) if length > fixed else b""
        return _new_tuple(Call, (session, seq, op, cs.unpack_from(buf, start)[2:], blob, bool(queued)))

    def _parse_reply(self, session: int, seq: int, buf: bytearray, start: int, length: int) -> Reply:
        """The REPLY whose `length` payload bytes start at `buf[start]` (the blob is copied out)."""
        if self.role is not Role.CLIENT:
            raise RemoteProtocolError("REPLY sent to the host")
        op = self._pending.pop((session, seq), None)
        if op is None:
            raise RemoteProtocolError(f"REPLY to session {session} seq {seq}, which is not awaited")
        if length < 4:
            raise RemoteProtocolError("REPLY payload shorter than its status")
        (status,) = _STATUS.unpack_from(buf, start)
        end = start + length
        if status != 0:
            return _new_tuple(Reply, (session, seq, status, (), bytes(buf[start + 4: end])))
        rs = OPS[op].result_struct
        fixed = start + 4 + rs.size
        if end < fixed:
            raise RemoteProtocolError(f"REPLY to {op.name} shorter than its results")
        return _new_tuple(Reply, (session, seq, 0, rs.unpack_from(buf, start + 4),
                                  bytes(buf[fixed: end]) if end > fixed else b""))

    # --- sending ---------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def send(self, msg: Message) -> bytes:
        if isinstance(msg, tuple):  # Call / Reply (NamedTuples) are the hot path
            if isinstance(msg, Call):
                return self.send_call(msg.session, msg.seq, msg.op, msg.args, msg.blob, msg.queued)
            return self.send_reply(msg.session, msg.seq, msg.status, msg.values, msg.blob, None)
        if isinstance(msg, Hello):
            if self.role is not Role.CLIENT:
                raise LocalProtocolError("only a client says HELLO")
            payload = _json_payload(msg, Hello._FIELDS)
            return _frame(Kind.HELLO, 0, msg.session, 0, payload)
        if isinstance(msg, Welcome):
            if self.role is not Role.HOST:
                raise LocalProtocolError("only the host says WELCOME")
            self._sessions.add(msg.session)
            self._limits[msg.session] = msg.max_frame  # this session's frames, not the others'
            return _frame(Kind.WELCOME, 0, msg.session, 0, _json_payload(msg, Welcome._FIELDS))
        if isinstance(msg, Goodbye):
            self._sessions.discard(msg.session)
            self._limits.pop(msg.session, None)
            return _frame(Kind.GOODBYE, 0, msg.session, 0, msg.reason.encode()[:MAX_ERROR_TEXT])
        if isinstance(msg, Doorbell):
            return _frame(Kind.DOORBELL, 0, msg.session, 0, b"")
        raise LocalProtocolError(f"cannot send {type(msg).__name__}")

    def send_call(self, session: int, seq: int, op: Op, args, blob: bytes = b"",
                  queued: bool = False) -> bytes:
        spec = OPS[op]
        if len(args) != len(spec.args):
            raise LocalProtocolError(f"{op.name} takes {len(spec.args)} args, got {len(args)}")
        if len(blob) > spec.blob:
            raise LocalProtocolError(f"{op.name}: blob of {len(blob)} bytes, limit {spec.blob}")
        if queued and not spec.queueable:
            raise LocalProtocolError(f"{op.name} cannot be queued")
        st = _CALL_FRAMES[op]
        length = st.size - HEADER_SIZE + len(blob)
        if length > self.max_frame:
            raise LocalProtocolError(f"{op.name}: frame of {length} bytes over {self.max_frame}")
        try:
            frame = st.pack(MAGIC, _KIND_CALL, QUEUED if queued else 0, session, seq, length, op,
                            len(args), *args)
        except struct.error as e:
            raise LocalProtocolError(f"{op.name}: argument out of range ({e})") from None
        if not queued:
            self._pending[(session, seq)] = op
        return frame + blob if blob else frame

    def send_reply(self, session: int, seq: int, status: int, values=(), blob: bytes = b"",
                   op: Op | None = None) -> bytes:
        if status == 0 and op is not None:  # the common case: header, status and results in one pack
            rs = _REPLY_STRUCTS[op]
            frame = rs.pack(MAGIC, _KIND_REPLY, 0, session, seq, rs.size - HEADER_SIZE + len(blob), 0,
                            *values)
            return frame + blob if blob else frame
        if status == 0:
            body = _STATUS.pack(0) + b"".join(struct.pack("<Q", v) for v in values)
        else:
            body = _STATUS.pack(status)
            blob = blob[:MAX_ERROR_TEXT]
        return _frame(Kind.REPLY, 0, session, seq, body + blob)

    def expected(self, session: int, seq: int) -> bool:
        """Whether a reply to (session, seq) is still awaited (client side)."""
        return (session, seq) in self._pending


def _frame(kind: Kind, flags: int, session: int, seq: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, kind, flags, session, seq, len(payload)) + payload


def launch_seq(buf, start: int) -> int:
    """The sequence number of the LAUNCH frame in `buf` whose parameter bytes begin at `start`
    (as `Connection.take_launches` gives it, or a repeat of it)."""
    return _SEQ.unpack_from(buf, start - _LAUNCH_FIXED + _SEQ_AT)[0]


def negotiate(hello: Hello, host_max_frame: int = DEFAULT_MAX_FRAME) -> tuple[int, int]:
    """(version, max_frame) both sides can use, or RemoteProtocolError naming the mismatch."""
    if hello.version_min > PROTOCOL_VERSION or hello.version_max < PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"guest speaks protocol {hello.version_min}..{hello.version_max}, host speaks "
            f"{PROTOCOL_VERSION}: install matching kvmgpu and kvmgpu-guest versions")
    max_frame = min(hello.max_frame or DEFAULT_MAX_FRAME, host_max_frame)
    if max_frame < MIN_MAX_FRAME:
        raise RemoteProtocolError(f"max_frame {hello.max_frame} is below the minimum of {MIN_MAX_FRAME}")
    return PROTOCOL_VERSION, max_frame


def pack_params(layout) -> bytes:
    """A reply blob describing kernel parameters: (offset, size) pairs."""
    return b"".join(PARAM.pack(off, size) for off, size in layout)


def unpack_params(blob: bytes, count: int) -> list[tuple[int, int]]:
    if len(blob) < count * PARAM.size:
        raise RemoteProtocolError("parameter table shorter than its count")
    return [PARAM.unpack_from(blob, i * PARAM.size) for i in range(count)]

"""The worker under fuzz: a VGpu on the sim backend with a real Region in a temporary file, a
channel the script plays on, and a bystander channel that must come through untouched.

`play(script)` runs one script (guestscript.py) and checks, after every step:

  - every synchronous call gets exactly one reply, in order, and nothing else comes back (a HELLO
    gets its WELCOME or GOODBYE): read off the bytes the channel took, frame by frame;
  - the memory quota in use is the sum of the live sessions' allocations; what the backend holds
    is exactly those allocations and the cached modules' globals; the module cache's references
    are the sessions' module handles; the backend's live streams are the sessions' streams;
  - a session's functions and globals belong to modules it holds; the sessions' windows are
    disjoint, inside the region and those the window allocator has taken; the sessions with a
    mailbox are those the worker looks at; the channel's sessions are the vGPU's;
  - the bystander's session, its tables and every byte of its window are as they were.

A `RemoteProtocolError` closes the channel: its sessions end, the bystander's stay, and the script
stops there (a worker drops that connection). Any other exception is a finding. At the end both
channels close: the quota in use is then 0, no window is taken and the backend holds only the
cached modules' globals.
"""

from __future__ import annotations

import ctypes
import json
import logging
import struct
import tempfile
import traceback
import zlib
from pathlib import Path

from kvmgpu.backend.base import Capabilities, CudaError
from kvmgpu.backend.sim import SimBackend, SimStream
from kvmgpu.worker import Channel, VGpu
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.mailbox import REPLY_MAX, REQUEST_MAX
from kvmgpu_wire.protocol import (
    HEADER,
    HEADER_SIZE,
    OPS,
    Connection,
    Goodbye,
    Hello,
    LocalProtocolError,
    Op,
    RemoteProtocolError,
    Role,
)
from kvmgpu_wire.region import Region

import guestscript as gs

MIB = 1 << 20
GMEM = 4 * MIB
REGION = 2 * MIB
WINDOWS = [0, 64 << 10, 256 << 10, 1 << 20, 4096, 100, 3 << 20, 65 << 10]
MAX_FRAMES = [0, 4096, 64 << 10, 4095, 1 << 20, 100000]
KIND_CALL, KIND_REPLY, KIND_HELLO, KIND_WELCOME, KIND_GOODBYE = 3, 4, 1, 2, 5
QUEUED = 1

try:
    from kvmgpu.backend import launcher
    from kvmgpu.backend.launcher import LaunchRecords
    _C = launcher.load()
except OSError:
    _C = None

_LAUNCH_PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, *([ctypes.c_uint] * 7),
                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class FuzzStream(SimStream):
    """A sim stream that, like a driver's CUstream, is a number to the C launch loop."""

    def __int__(self) -> int:
        return id(self)


class FuzzSim(SimBackend):
    """The sim backend less the test kernel `spin`, which sleeps as long as its argument says (a
    kernel for the compute gate's tests, not a subject here); its streams are numbers, as the
    driver's are."""

    def stream_create(self, flags: int) -> FuzzStream:
        super().stream_create(flags)
        return FuzzStream()

    def launch(self, function, grid, block, shared, stream, args: bytes) -> None:
        if function.name == "spin":
            raise CudaError(CUresult.CUDA_ERROR_NOT_SUPPORTED, "spin is not run under fuzzing")
        super().launch(function, grid, block, shared, stream, args)


class SimThroughC(FuzzSim):
    """The sim backend whose queued launches go through the worker's C loop (launcher.c) to a
    cuLaunchKernel stand-in that runs them here, as the cuda backend's go to the driver."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._functions: dict[int, object] = {}
        self._fn = _LAUNCH_PROTO(self._driver_launch)
        fn = ctypes.cast(self._fn, ctypes.c_void_p).value

        def launch_in(f, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes) -> None:
            err = _C.launch(fn, f.address, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes)
            if err:
                raise CudaError(err, "cuLaunchKernel")
        self.capabilities = Capabilities(launch_records=LaunchRecords(fn), launch_in=launch_in,
                                         launch_flat=self.launch_flat)

    def module_get_function(self, module, name):
        fn, layout = super().module_get_function(module, name)
        fn.address = 0x10000 + len(self._functions) * 0x100
        self._functions[fn.address] = fn
        return fn, layout

    def _driver_launch(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra) -> int:
        e = ctypes.cast(extra, ctypes.POINTER(ctypes.c_void_p))
        size = ctypes.c_uint64.from_address(e[3]).value
        args = ctypes.string_at(e[1], size)
        try:
            self.launch_flat(self._functions[f], gx, gy, gz, bx, by, bz, shared, None, args)
        except CudaError as err:
            return err.code
        return 0


class Frames:
    """What a channel's bytes ask for, frame by frame, as the host must read them."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple]:
        """The answers the whole frames completed by `data` must get: ('reply', session, seq, op)
        for a call that is not queued, ('hello', session) for a HELLO."""
        self.buf += data
        want = []
        while len(self.buf) >= HEADER_SIZE:
            _, kind, flags, session, seq, length = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER_SIZE + length:
                break
            payload = self.buf[HEADER_SIZE: HEADER_SIZE + length]
            self.buf = self.buf[HEADER_SIZE + length:]
            if kind == KIND_CALL and not flags & QUEUED:
                want.append(("reply", session, seq, struct.unpack_from("<H", payload)[0] if length >= 2 else -1))
            elif kind == KIND_HELLO:
                want.append(("hello", session))
            elif kind == KIND_GOODBYE:
                want.append(("goodbye", session))  # no answer: the session ends
        return want


def answers(out: bytes) -> list[tuple]:
    """The host's frames in `out`: (kind, session, seq, payload)."""
    got, pos = [], 0
    while pos < len(out):
        _, kind, _, session, seq, length = HEADER.unpack_from(out, pos)
        got.append((kind, session, seq, out[pos + HEADER_SIZE: pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    assert pos == len(out), "the host wrote part of a frame"
    return got


class Bystander:
    """Another VM process's session on its own channel: an allocation, a stream, the test module."""

    def __init__(self, host: "Host"):
        self.channel = host.new_channel()
        self.guest = Connection(Role.CLIENT)
        self.host = host
        (w,) = answers(self.channel.receive(self.guest.send(Hello(9, window=64 << 10))))
        assert w[0] == KIND_WELCOME, w
        self.session = host.vgpu.sessions[(self.channel.cid, 9)]
        self._ok(Op.MEM_ALLOC, (4096,))
        self._ok(Op.STREAM_CREATE, (0,))
        host.region.view[self.session.window.offset: self.session.window.offset + len(gs.PTX)] = gs.PTX
        self._ok(Op.MODULE_LOAD, (0, len(gs.PTX)), gs.sha(gs.PTX))
        view = self.session.window.view
        view[len(gs.PTX): len(gs.PTX) + 4096] = bytes(range(256)) * 16
        self.tables = self._tables()
        self.crc = zlib.crc32(view)

    def _ok(self, op, args, blob=b""):
        seq = self.guest.next_seq()
        (r,) = answers(self.channel.receive(self.guest.send_call(9, seq, op, args, blob)))
        assert struct.unpack_from("<i", r[3])[0] == 0, r

    def _tables(self):
        s = self.session
        return (dict((p, (r.size, r.digest)) for p, r in s.ranges.items()), dict(s.streams),
                dict(s.modules), dict(s.functions), dict(s.events))

    def check(self) -> None:
        vg = self.host.vgpu
        assert not self.channel.closed and vg.sessions.get(self.session.key) is self.session, \
            "the bystander's session ended"
        assert self._tables() == self.tables, "the bystander's tables changed"
        assert zlib.crc32(self.session.window.view) == self.crc, "the bystander's window changed"


class Host:
    def __init__(self, region: Region, c_loop: bool):
        region.view[:] = bytes(region.size)
        self.region = region
        factory = SimThroughC if c_loop and _C is not None else FuzzSim
        self.vgpu = VGpu(lambda: factory(total_memory=GMEM), GMEM, region, vm="fuzz")
        self._cid = 0
        self.bystander = Bystander(self)
        self.channel = self.new_channel()
        self.guest = Connection(Role.CLIENT, max_frame=1 << 24)  # builds the script's calls
        self.frames = Frames()
        self.seen: dict[int, list[int]] = {1: [], 2: [], 3: []}  # values each session was given
        self.ops: dict[tuple, Op] = {}
        self.limits: dict[int, int] = {}  # session -> the frame limit its WELCOME gave
        self.batch = b""  # calls held to go together with the next (CALL flags bit 2)
        self.batch_legal = True  # whether every call held is legal on its own
        self.hello(0, 2, 0)  # session 1, a 256 KiB window (with a mailbox): the script starts past HELLO

    def new_channel(self) -> Channel:
        self._cid += 1
        return Channel(self.vgpu, self._cid)

    # --- the steps --------------------------------------------------------------------------------

    def send(self, data: bytes) -> bytes:
        """`data` on the channel (after the calls held for a batch): the reply bytes, checked
        against what the frames ask for."""
        data, self.batch = self.batch + data, b""
        want = self.frames.feed(data)
        out = self.channel.receive(data)
        self._check_answers(want, answers(out))
        return out

    def _check_answers(self, want: list, got: list) -> None:
        for w in want:
            if w[0] == "goodbye":
                self.limits.pop(w[1], None)
        want = [w for w in want if w[0] != "goodbye"]
        assert len(got) == len(want), f"{len(want)} answers due, {len(got)} came: {want} / {got}"
        for w, (kind, session, seq, payload) in zip(want, got):
            if w[0] == "hello":
                assert kind in (KIND_WELCOME, KIND_GOODBYE) and session == w[1], (w, kind, session)
                if kind == KIND_WELCOME:
                    self.limits[session] = json.loads(payload)["max_frame"]
                else:
                    self.limits.pop(session, None)
                continue
            assert kind == KIND_REPLY and (session, seq) == w[1:3], (w, kind, session, seq)
            status = struct.unpack_from("<i", payload)[0]
            op = self.ops.pop((session, seq), None) or (Op(w[3]) if w[3] in Op._value2member_map_ else None)
            if status == 0 and op is not None and session in self.seen:
                rs = OPS[op].result_struct
                values = rs.unpack_from(payload, 4)
                self.seen[session] += [int(v) for v in values if isinstance(v, int)]
                del self.seen[session][:-64]

    def call(self, slot, op, flags, args, blob) -> None:
        sid = gs.slot_session(slot)
        seen = self.seen[sid]
        values = tuple(self._arg(a, seen) for a in args)
        spec = OPS[op]
        queued = bool(flags & 1) and spec.queueable
        data = self._blob(blob, seen)[: spec.blob]
        seq = self.guest.next_seq()
        try:
            frame = self.guest.send_call(sid, seq, op, values, data, queued)
        except LocalProtocolError:
            return
        self.guest._pending.pop((sid, seq), None)
        self.ops[(sid, seq)] = op
        # A well-formed call within its session's limit, on a channel at a frame boundary, is
        # answered: it never closes the channel.
        legal = sid in self.limits and len(frame) - HEADER_SIZE <= self.limits[sid]
        if flags & 4 and len(self.batch) < 8192:  # held, to go with the next call (a batch)
            self.batch += frame
            self.batch_legal = self.batch_legal and legal
            return
        legal = legal and self.batch_legal
        self.batch_legal = True
        try:
            if flags & 2:
                frame, self.batch = self.batch + frame, b""
                legal = legal and len(frame) <= REQUEST_MAX and sid in self.batch_sessions(frame)
                self.post(slot, len(frame), frame)
            else:
                legal = legal and not self.frames.buf
                self.send(frame)
        except RemoteProtocolError as e:
            assert not legal, f"a legal {op.name} call closed the channel: {e}"
            raise

    @staticmethod
    def batch_sessions(frames: bytes) -> set:
        """The sessions whose frames `frames` holds (a post may carry only its own session's)."""
        out, pos = set(), 0
        while pos + HEADER_SIZE <= len(frames):
            _, _, _, session, _, length = HEADER.unpack_from(frames, pos)
            out.add(session)
            pos += HEADER_SIZE + length
        return out if len(out) == 1 else set()

    def _arg(self, a: tuple, seen: list) -> int:
        kind = a[0]
        if kind == "zero":
            return 0
        if kind in ("byte", "u64"):
            return a[1]
        if kind == "seen":
            return seen[a[1] % len(seen)] if seen else a[1]
        if kind == "seen+":
            return ((seen[a[1] % len(seen)] if seen else 0) + a[2]) & (2**64 - 1)
        if kind == "window":
            return a[1] * 16
        if kind == "pow2":
            return (1 << (a[1] % 64))
        return a[1] * 4

    def _blob(self, b: tuple, seen: list) -> bytes:
        kind = b[0]
        if kind == "none":
            return b""
        if kind == "sha":
            return gs.sha(gs.IMAGES[b[1] % len(gs.IMAGES)])
        if kind == "name":
            return gs.NAMES[b[1] % len(gs.NAMES)]
        if kind == "raw":
            return b[1]
        count = b[1] & 7
        pointers = [v for v in seen if v >> 32] or [0]
        values = [pointers[i % len(pointers)] for i in range(count)]
        return struct.pack(f"<{count}Q", *values) + (struct.pack("<I", 64) if b[1] & 8 else b"")

    def hello(self, slot, window, max_frame) -> None:
        sid = gs.slot_session(slot)
        self.seen[sid] = []
        w = WINDOWS[window % len(WINDOWS)] if window < 200 else window * 4096
        mf = MAX_FRAMES[max_frame % len(MAX_FRAMES)]
        self.send(Connection(Role.CLIENT).send(Hello(sid, window=w, max_frame=mf, client="fuzz")))

    def goodbye(self, slot) -> None:
        self.send(Connection(Role.CLIENT).send(Goodbye(gs.slot_session(slot), "fuzz")))

    def _session(self, slot):
        return self.vgpu.sessions.get((self.channel.cid, gs.slot_session(slot)))

    def image(self, slot, image, offset, load) -> None:
        s = self._session(slot)
        if s is not None and s.window.size:
            offset %= s.window.size
            n = min(len(image), s.window.size - offset)
            s.window.view[offset: offset + n] = image[:n]
        if load & 1:
            sid = gs.slot_session(slot)
            seq = self.guest.next_seq()
            frame = self.guest.send_call(sid, seq, Op.MODULE_LOAD, (offset, len(image)), gs.sha(image))
            self.guest._pending.pop((sid, seq), None)
            self.ops[(sid, seq)] = Op.MODULE_LOAD
            self.send(frame)

    def poke(self, slot, offset, data) -> None:
        s = self._session(slot)
        if s is not None:
            offset %= s.window.size
            n = min(len(data), s.window.size - offset)
            s.window.view[offset: offset + n] = data[:n]

    def post(self, slot, size, body) -> None:
        """Post `body` (its size word says `size`) and serve it, as the worker's loop does."""
        s = self._session(slot)
        if s is None or s.mailbox is None:
            return
        box = s.mailbox
        box.request[: len(body)] = body[: len(box.request)]
        box.words[1] = size
        box.words[0] = (box.words[0] + 1) & 0xFFFFFFFF
        want = Frames().feed(body[:size]) if size <= len(box.request) else []
        out = self.channel.take_post(s)
        assert out is not None, "a post was not taken"
        self._check_answers(want, answers(out))
        if s.mailbox is not None:
            s.mailbox.answer(out if len(out) <= REPLY_MAX else b"")

    # --- the invariants -------------------------------------------------------------------------

    def check(self) -> None:
        vg = self.vgpu
        live = vg.sessions.values()
        # what the quota was charged: each allocation (at its size on the GPU), each loaded
        # module's globals
        allocated = sum(getattr(r, "charge", r.size) for s in live for r in s.ranges.values()
                        if r.digest is None)
        modules = sum(getattr(e, "charge", 0) for e in vg.modules._entries.values())
        assert vg.quota.used == allocated + modules, \
            f"quota in use {vg.quota.used}, allocations {allocated}, module globals {modules}"
        assert all(e.refs for e in vg.modules._entries.values() if getattr(e, "charge", 0)), \
            "a module no handle uses still holds quota"
        assert 0 <= vg.quota.used <= vg.quota.limit
        # windows: disjoint, inside the region, those the allocator took
        spans = sorted((s.window.offset, s.window.size) for s in live)
        assert spans == sorted(vg.windows._taken), (spans, vg.windows._taken)
        for (a, n), (b, _) in zip(spans, spans[1:]):
            assert a + n <= b, f"windows [{a}, +{n}) and [{b}, ...) overlap"
        assert all(0 <= a and a + n <= self.region.size for a, n in spans)
        assert sorted(map(id, vg.boxed)) == sorted(id(s) for s in live if s.mailbox is not None)
        for ch in (self.channel, self.bystander.channel):
            mine = {k[1] for k in vg.sessions if k[0] == ch.cid}
            assert ch.sessions == mine, f"channel {ch.cid} sessions {ch.sessions}, vGPU {mine}"
        refs: dict[bytes, int] = {}
        for s in live:
            for digest in s.modules.values():
                refs[digest] = refs.get(digest, 0) + 1
            assert all(f.module in s.modules for f in s.functions.values()), "a function outlived its module"
            assert all(r.digest is None or r.digest in s.modules.values() for r in s.ranges.values()), \
                "a global outlived its module"
            assert s.starts == sorted(s.ranges), "the range index is out of order"
        if hasattr(vg, "objects"):
            assert vg.objects == sum(s.objects for s in live), "the VM's object count is not its tables'"
        cached = {d: e.refs for d, e in vg.modules._entries.items()}
        assert {d: n for d, n in cached.items() if n} == refs, (cached, refs)
        if vg.broken is None:
            b = vg.backend
            held = {p: r.size for s in live for p, r in s.ranges.items() if r.digest is None}
            for e in vg.modules._entries.values():
                held.update({p: n for p, n in e.module.globals.values()})
            have = {p: len(buf) for p, buf in b._allocs.items()}
            assert have == {p: max(n, 1) for p, n in held.items()}, "backend memory is not the tables'"
            size = getattr(b, "allocation_size", lambda n: n)
            assert b._used == sum(size(n) for n in have.values()), "the backend's count is not its memory"
            assert b.streams_live == sum(len(s.streams) for s in live), "backend streams are not the tables'"
        self.bystander.check()

    def finish(self) -> None:
        """Close the channel, then the bystander's: everything is given back."""
        vg = self.vgpu
        self.channel.close()
        assert not [k for k in vg.sessions if k[0] == self.channel.cid]
        self.check()
        self.bystander.channel.close()
        assert not vg.sessions and not vg.boxed, vg.sessions
        assert vg.quota.used == 0, f"{vg.quota.used} bytes of quota still in use with no session"
        assert vg.windows.used == 0 and not vg.windows._taken
        if vg.broken is None:
            globals_ = {p for e in vg.modules._entries.values() for p, _ in e.module.globals.values()}
            assert set(vg.backend._allocs) == globals_, "device memory left behind"
            assert vg.backend.streams_live == 0
        vg.close()


class InternalErrors(logging.Handler):
    """The worker's "failed unexpectedly" log lines: a handler's exception that dispatch turned
    into CUDA_ERROR_UNKNOWN for the guest is a bug all the same (a finding)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def check(self) -> None:
        if self.records:
            r = self.records[0]
            trace = "".join(traceback.format_exception(*r.exc_info)) if r.exc_info else ""
            raise AssertionError(f"internal error in the worker: {r.getMessage()}\n{trace}")


_region: Region | None = None


def region() -> Region:
    """One region file for the process (each script zeroes it)."""
    global _region
    if _region is None:
        path = Path(tempfile.mkdtemp(prefix="kvmgpu-fuzz-")) / "region"
        _region = Region.open_file(str(path), REGION, create=True)
        path.unlink()
    return _region


def play(data: bytes) -> None:
    if not data:
        return
    errors = InternalErrors()
    log = logging.getLogger("kvmgpu")
    log.addHandler(errors)
    try:
        _play(data, errors)
    finally:
        log.removeHandler(errors)


def _play(data: bytes, errors: InternalErrors) -> None:
    host = Host(region(), bool(data[0] & 1))
    host.check()
    steps = {"RAW": host.send, "CALL": host.call, "HELLO": host.hello, "GOODBYE": host.goodbye,
             "IMAGE": host.image, "POKE": host.poke, "POST": host.post}
    for name, fields in gs.read_steps(data):
        try:
            steps[name](*fields)
        except RemoteProtocolError:
            assert host.channel.closed, "a protocol violation left the channel open"
            host.check()
            break
        host.check()
        errors.check()
    host.finish()
    errors.check()

"""The negative-test matrix, generated from the op specification (guest-agent/kvmgpu_wire/spec.py):
for every op, every argument's hostile values (the variants its kind names) and every hostile blob
are sent to a worker's channel (sim backend, in memory), and each must get the error its kind
documents and change nothing: the quota, every session's tables and ranges, the module cache. A
queueable op's hostile call, sent queued, gets no reply and its error comes back from the
session's next synchronising call, once.

Each op's well-formed call (`baseline`) is accepted: so a refusal below is the hostile value's doing.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import pytest

from kvmgpu_wire import kinds, spec
from kvmgpu_wire.protocol import Op, RemoteProtocolError

from rawguest import MIB, PTX, Guest, Host

ALLOC = 64 * 1024  # each session's allocation
IMAGE = PTX + b"\n// an image the host does not have yet\n"  # MODULE_LOAD must read the window
NAMES = {"MODULE_GET_FUNCTION": b"vector_add", "MODULE_GET_GLOBAL": b"scale"}


@dataclass
class World:
    """Two sessions on one channel, each with one of everything; `a` is the one that calls."""

    host: Host
    a: Guest
    b: Guest
    mine: dict  # table -> a handle of `a`'s; "alloc" -> its allocation
    theirs: dict  # the same of `b`'s
    released: dict  # table -> a handle `a` had and released


def _graph(g: Guest) -> tuple[int, int]:
    """A graph captured on a stream of its own, and its executable."""
    stream = g.ok(Op.STREAM_CREATE, 0)[0]
    g.ok(Op.STREAM_BEGIN_CAPTURE, stream)
    graph = g.ok(Op.STREAM_END_CAPTURE, stream)[0]
    return graph, g.ok(Op.GRAPH_INSTANTIATE, graph, 0)[0]


def _everything(g: Guest) -> dict:
    module = g.load()
    event = g.ok(Op.EVENT_CREATE, 0)[0]
    g.ok(Op.EVENT_RECORD, event, 0)  # so EVENT_ELAPSED has a time to read
    graph, graph_exec = _graph(g)
    return {"modules": module, "functions": g.function(module, "vector_add")[0],
            "streams": g.ok(Op.STREAM_CREATE, 0)[0], "events": event, "alloc": g.alloc(ALLOC),
            "graphs": graph, "graph_execs": graph_exec}


@pytest.fixture
def world(tmp_path):
    host = Host(tmp_path)
    ch = host.channel()
    a = host.guest(window=1 * MIB, session=1, channel=ch)
    b = host.guest(window=1 * MIB, session=2, channel=ch)
    for _ in range(16):  # b's handles are numbers a never had
        b.ok(Op.EVENT_CREATE, 0)
    mine, theirs = _everything(a), _everything(b)
    released = {"streams": a.ok(Op.STREAM_CREATE, 0)[0], "events": a.ok(Op.EVENT_CREATE, 0)[0],
                "modules": a.load()}
    released["functions"] = a.function(released["modules"], "saxpy")[0]
    released["graphs"], released["graph_execs"] = _graph(a)
    a.ok(Op.GRAPH_EXEC_DESTROY, released["graph_execs"])
    a.ok(Op.GRAPH_DESTROY, released["graphs"])
    a.ok(Op.STREAM_DESTROY, released["streams"])
    a.ok(Op.EVENT_DESTROY, released["events"])
    a.ok(Op.MODULE_UNLOAD, released["modules"])  # its functions go with it
    a.window.view[0: len(IMAGE)] = IMAGE
    yield World(host, a, b, mine, theirs, released)
    host.close()


# --- a well-formed call of every op, from its declaration --------------------------------------------

def _length(d: spec.OpDecl, a: kinds.Length) -> int:
    if (d.name, a.name) in VALUES:
        return VALUES[d.name, a.name]
    if d.name == "MODULE_LOAD":
        return len(IMAGE)
    if d.name == "MEM_ALLOC":
        return 4096
    return 64


# What an op's well-formed call needs first (an op that ends a capture needs one begun).
PREPARE = {"STREAM_END_CAPTURE": lambda w: w.a.ok(Op.STREAM_BEGIN_CAPTURE, w.mine["streams"])}
# A value the backend accepts where 0 is not one (kinds bound a value; the driver says which it takes).
VALUES = {("FUNC_SET_ATTRIBUTE", "attribute"): 8, ("FUNC_SET_ATTRIBUTE", "value"): 1024,
          ("OCCUPANCY_AVAILABLE_SMEM", "blocks"): 1, ("TENSOR_MAP_ENCODE_TILED", "rank"): 2,
          ("OCCUPANCY_MAX_CLUSTERS", "gx"): 2, ("OCCUPANCY_MAX_CLUSTERS", "gy"): 1,
          ("OCCUPANCY_MAX_CLUSTERS", "gz"): 1, ("OCCUPANCY_MAX_CLUSTERS", "bx"): 128,
          ("OCCUPANCY_MAX_CLUSTERS", "by"): 1, ("OCCUPANCY_MAX_CLUSTERS", "bz"): 1,
          ("OCCUPANCY_MAX_CLUSTERS", "cx"): 2, ("OCCUPANCY_MAX_CLUSTERS", "cy"): 1,
          ("OCCUPANCY_MAX_CLUSTERS", "cz"): 1, ("TENSOR_MAP_ENCODE_IM2COL", "rank"): 4}


def baseline(w: World, d: spec.OpDecl) -> tuple[list[int], bytes]:
    if d.name in PREPARE:
        PREPARE[d.name](w)
    window_at = {}  # each window argument its own page, past the image
    values = []
    for a in d.args:
        if isinstance(a, kinds.Handle):
            values.append(w.mine[a.table])
        elif isinstance(a, (kinds.Allocation, kinds.DevicePtr)):
            values.append(w.mine["alloc"])
        elif isinstance(a, kinds.WindowOffset):
            window_at[a.name] = 0 if d.name == "MODULE_LOAD" else (1 + len(window_at)) * 64 * 1024
            values.append(window_at[a.name])
        elif isinstance(a, kinds.Length):
            values.append(_length(d, a))
        elif isinstance(a, kinds.Dim):
            values.append(a.min)
        elif a.name == "address" and d.name.startswith("TENSOR_MAP"):  # (a pointer, checked by hand)
            values.append(w.mine["alloc"])
        else:  # Flags, Value
            values.append(VALUES.get((d.name, a.name), 0))
    blob = b""
    if isinstance(d.blob, kinds.Digest):
        blob = hashlib.sha256(IMAGE).digest()
    elif isinstance(d.blob, kinds.Name):
        blob = NAMES[d.name]
    elif isinstance(d.blob, kinds.Params):
        p = w.mine["alloc"]
        blob = struct.pack("<QQQi", p, p, p, 16)
    elif d.name == "TENSOR_MAP_ENCODE_TILED":  # a 16x4 tensor of bytes, 16 bytes a row: 64 bytes
        blob = struct.pack("<5Q4Q5I5I", 16, 4, 0, 0, 0, 16, 0, 0, 0, 16, 4, 0, 0, 0, 1, 1, 0, 0, 0)
    elif d.name == "TENSOR_MAP_ENCODE_IM2COL":  # NHWC 4x2x2x1 bytes: 16 bytes
        blob = struct.pack("<5Q4Q3i3i5III", 4, 2, 2, 1, 0, 4, 8, 16, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 4, 4)
    return values, blob


# --- hostile values -------------------------------------------------------------------------------

def _length_of(d: spec.OpDecl, values: list[int], a) -> int:
    if isinstance(a.length, int):
        return a.length
    return values[d.arg_names.index(a.length)] * getattr(a, "scale", 1)


def hostile_value(w: World, d: spec.OpDecl, values: list[int], a: kinds.Arg, variant: str) -> int:
    if isinstance(a, kinds.Handle):
        h = {"unknown": 0xDEAD, "other_session": w.theirs[a.table],
             "released": w.released[a.table]}[variant]
        assert h not in getattr(w.host.vgpu.sessions[w.a.channel.cid, 1], a.table), "a's own handle"
        return h
    if isinstance(a, kinds.Allocation):
        return {"inside": w.mine["alloc"] + 16, "unknown": 0x1000,
                "other_session": w.theirs["alloc"]}[variant]
    if isinstance(a, kinds.DevicePtr):
        n = _length_of(d, values, a)
        return {"past_end": w.mine["alloc"] + ALLOC - n + 1, "unknown": 0x1000,
                "other_session": w.theirs["alloc"]}[variant]
    if isinstance(a, kinds.WindowOffset):
        n, size = _length_of(d, values, a), w.a.welcome.window_size
        return {"past_end": -(-(size - n + 1) // a.align) * a.align, "huge": 2**64 - a.align}[variant]
    if isinstance(a, kinds.Length):
        return {"under": a.min - 1, "over": a.max + 1}[variant]
    if isinstance(a, kinds.Flags):
        return a.mask + 1
    if isinstance(a, kinds.Value):
        return a.max + 1
    if isinstance(a, kinds.Dim):
        return 0 if variant == "zero" else w.host.vgpu.attribute(a.attribute, 0) + 1
    raise AssertionError(f"no hostile value for {type(a).__name__}")


def hostile_blob(d: spec.OpDecl, blob: bytes, variant: str) -> bytes:
    return {"oversized": b"x" * (d.blob.max + 1), "short": blob[:-1], "not_utf8": b"\xff\xfe",
            "empty": b"", "nul": blob + b"\0"}[variant]


CASES = [pytest.param(d, a.name, v, id=f"{d.name}-{a.name}-{v}")
         for d in spec.OPS for a in d.args for v in a.hostile]
BLOB_CASES = [pytest.param(d, v, id=f"{d.name}-{v}")
              for d in spec.OPS if d.blob for v in d.blob.hostile if v != "oversized"]


def snapshot(w: World):
    vg = w.host.vgpu
    tables = {key: (len(s.modules), len(s.functions), len(s.streams), len(s.events), len(s.graphs),
                    len(s.graph_execs), set(s.captures), {p: r.size for p, r in s.ranges.items()},
                    s.pending_error)
              for key, s in vg.sessions.items()}
    return vg.quota.used, tables, len(vg.modules)


def _refused(w: World, d: spec.OpDecl, values, blob, error: int) -> None:
    before = snapshot(w)
    r = w.a.call(Op[d.name], *values, blob=blob)
    assert r.status == error, (r.status, r.blob)
    assert d.name.encode() in r.blob, "the error text names the op"
    assert snapshot(w) == before, "a refused call changed nothing"
    if d.queueable:
        w.a.call(Op[d.name], *values, blob=blob, queued=True)
        r = w.a.call(Op.CTX_SYNCHRONIZE)
        assert r.status == error and b"queued" in r.blob, (r.status, r.blob)
        assert w.a.call(Op.CTX_SYNCHRONIZE).status == 0, "a queued error is reported once"
        assert snapshot(w) == before


@pytest.mark.parametrize("d", [d for d in spec.OPS if "sim" in d.backends], ids=lambda d: d.name)
def test_baseline_is_accepted(world, d):
    values, blob = baseline(world, d)
    r = world.a.call(Op[d.name], *values, blob=blob)
    assert r.status == 0, (r.status, r.blob)


@pytest.mark.parametrize("d, arg, variant", CASES)
def test_hostile_argument_is_refused(world, d, arg, variant):
    values, blob = baseline(world, d)
    a = d.args[d.arg_names.index(arg)]
    values[d.arg_names.index(arg)] = hostile_value(world, d, values, a, variant)
    _refused(world, d, values, blob, a.error)


@pytest.mark.parametrize("d, variant", BLOB_CASES)
def test_hostile_blob_is_refused(world, d, variant):
    values, blob = baseline(world, d)
    _refused(world, d, values, hostile_blob(d, blob, variant), kinds.INVALID_VALUE)


@pytest.mark.parametrize("d", [d for d in spec.OPS if d.blob], ids=lambda d: d.name)
def test_oversized_blob_closes_only_its_channel(world, d):
    """A blob over its op's limit is a protocol violation: that channel is closed (the worker's
    server drops it), and another channel's sessions keep everything."""
    before = snapshot(world)
    other = world.host.guest(window=64 * 1024, session=9)
    values, blob = baseline(world, d)
    with pytest.raises(RemoteProtocolError, match="blob"):
        other.channel.receive(_call_frame(Op[d.name], 9, values, hostile_blob(d, blob, "oversized")))
    other.channel.close("protocol violation")
    assert snapshot(world) == before
    world.a.ok(Op.MEM_GET_INFO)  # the calling channel serves on


def _call_frame(op: Op, session: int, values, blob: bytes) -> bytes:
    """A CALL frame built by hand: the guest's Connection refuses to send an oversized blob."""
    payload = struct.pack(f"<HH{len(values)}Q", int(op), len(values), *values) + blob
    return struct.pack("<HBBIII", 0x474B, 3, 0, session, 1, len(payload)) + payload

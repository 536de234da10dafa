"""The op specification (guest-agent/kvmgpu_wire/spec.py) and what is generated from it."""

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kvmgpu_wire import spec
from kvmgpu_wire.kinds import TABLES, Allocation, DevicePtr, Handle, Length, NewHandle, WindowOffset
from kvmgpu_wire.protocol import OPS, Op

REPO = Path(__file__).resolve().parents[2]


def test_generated_files_are_current():
    """`make gen` was run after the last change to the specification (CI fails otherwise)."""
    r = subprocess.run([sys.executable, str(REPO / "tools" / "gen_wire.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_wire_tables_are_the_specification():
    assert [(op.name, int(op)) for op in Op] == [(d.name, d.id) for d in spec.OPS]
    for d in spec.OPS:
        o = OPS[Op[d.name]]
        assert (o.args, o.results, o.queueable, o.synchronising) == \
               (d.arg_names, d.result_format, d.queueable, d.synchronising)
        assert o.blob == (d.blob.max if d.blob else 0)


@pytest.mark.parametrize("d", spec.OPS, ids=lambda d: d.name)
def test_every_declaration_is_consistent(d):
    names = d.arg_names
    assert len(set(names)) == len(names), "argument names are unique"
    assert not (d.queueable and d.results), "a queued op cannot return results"
    assert d.waits_gpu in ("", "always", "if_sync")
    assert d.waits_gpu != "if_sync" or d.queueable, "only a queueable op waits only when not queued"
    assert bool(d.waits_gpu) == (d.wait_call is not None), "an op that waits names the call it waits in"
    assert not d.waits_in or d.waits_gpu, "waits_in only for an op that waits"
    if d.wait_call is not None:
        from kvmgpu.backend.base import Backend
        method, params = d.wait_call
        assert callable(getattr(Backend, method, None)), f"{method} is a backend method"
        assert d.waits_gpu == "always" or "sync" in params, "waiting only when not queued needs a sync"
    assert set(d.backends) <= set(spec.BACKENDS) and d.backends
    for a in d.args:
        if isinstance(a, (DevicePtr, WindowOffset)) and isinstance(a.length, str):
            assert a.length in names and isinstance(d.args[names.index(a.length)], Length), \
                f"{a.name}'s length {a.length!r} is a Length argument of {d.name}"
        if isinstance(a, Handle):
            assert a.table in TABLES
    if d.charges:
        assert isinstance(d.args[names.index(d.charges)], Length)
    if d.releases:
        assert isinstance(d.args[names.index(d.releases)], Allocation)
    for r in d.results:
        struct.calcsize("<" + r.format)
        assert not isinstance(r, NewHandle) or r.table in TABLES


def test_c_header_compiles_and_agrees_with_python(tmp_path):
    """The C headers (wire format, guest stubs) build with -Wall -Werror (its static asserts hold) and its layouts are
    the ones the Python side packs."""
    from kvmgpu_wire import ops
    probe = tmp_path / "probe.c"
    probe.write_text("""
#include <stddef.h>
#include <stdio.h>
#include "kvmgpu_calls.h"  /* the guest's stubs, and through it kvmgpu_wire.h */
int main(void) {
    printf("%zu %zu %zu %zu %zu\\n", sizeof(struct kvmgpu_frame_header),
           offsetof(struct kvmgpu_frame_header, length), sizeof(struct kvmgpu_launch_record),
           offsetof(struct kvmgpu_launch_record, count), sizeof(struct kvmgpu_args_launch));
    printf("%d %d %u\\n", KVMGPU_OP_MEMCPY_DTOH_PIECES, KVMGPU_PROTOCOL_VERSION, KVMGPU_MAGIC);
    return 0;
}
""")
    exe = tmp_path / "probe"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(REPO / "guest-agent" / "include"),
                    str(probe), "-o", str(exe)], check=True)
    sizes, ids = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    record = struct.Struct(ops.LAUNCH_RECORD_FORMAT)
    assert sizes.split() == [str(struct.calcsize(ops.HEADER_FORMAT)), "12", str(record.size),
                             str(record.size - 4), str(8 * len(OPS[Op.LAUNCH].args))]
    assert ids.split() == [str(int(Op.MEMCPY_DTOH_PIECES)), str(ops.PROTOCOL_VERSION), str(ops.MAGIC)]


@pytest.mark.parametrize("d", [d for d in spec.OPS if d.backend], ids=lambda d: d.name)
def test_every_thin_call_is_a_method_of_the_backends_that_serve_it(d):
    """An op declared `backend="method(fields)"` is that one call: each backend it names has the
    method (the cuda backend's source is read: cuda-bindings may not be installed here), and the
    fields are the request's."""
    from kvmgpu.backend.base import Backend
    from kvmgpu.backend.sim import SimBackend
    from kvmgpu.worker import requests
    method, fields, results = requests.THIN[Op[d.name]]
    assert results == len(d.results)
    assert callable(getattr(Backend, method, None)), f"base.py declares {method}"
    if "sim" in d.backends:
        assert callable(getattr(SimBackend, method, None))
    if "cuda" in d.backends:
        assert f"    def {method}(" in (REPO / "kvmgpu" / "backend" / "cuda.py").read_text()
    request = getattr(requests, "".join(p.capitalize() for p in d.name.split("_")))
    assert set(fields) <= set(request._fields)


def test_the_ops_that_change_a_session_s_tables_come_from_the_kinds():
    """What dispatch counts against the VM's objects: ops with new handles or ranges, quota
    charges and releases, and handles the call releases."""
    assert {d.name for d in spec.OPS if d.holds} == {
        "MEM_ALLOC", "MEM_FREE", "MODULE_LOAD", "MODULE_UNLOAD", "MODULE_GET_FUNCTION",
        "MODULE_GET_GLOBAL", "STREAM_CREATE", "STREAM_DESTROY", "EVENT_CREATE", "EVENT_DESTROY",
        "STREAM_END_CAPTURE", "GRAPH_INSTANTIATE", "GRAPH_EXEC_DESTROY", "GRAPH_DESTROY"}

"""The worker's launch loop in C (kvmgpu/backend/launcher.c) without a GPU: the driver's
cuLaunchKernel is stood in for by a Python function with its C signature, which sees exactly what
the driver would (and, in the worker tests, runs the launch on the sim backend)."""

from __future__ import annotations

import ctypes
import struct
import subprocess

import pytest

from kvmgpu.backend import launcher
from kvmgpu.backend.base import Capabilities, CudaError
from kvmgpu.backend.launcher import RECORD, LaunchRecords
from kvmgpu.backend.sim import SimBackend
from kvmgpu_wire import protocol
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import HEADER_SIZE, Connection, Op, launch_seq

from rawguest import Host, floats, unfloats
from test_protocol import handshaken

LAUNCH_PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, *([ctypes.c_uint] * 7),
                                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
OUT_OF_RESOURCES = CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES


def seen_launch(f, gx, gy, gz, bx, by, bz, shared, stream, kernel_params, extra) -> dict:
    """What a cuLaunchKernel call was given, the argument bytes read through `extra`."""
    args = None
    if extra:
        e = ctypes.cast(extra, ctypes.POINTER(ctypes.c_void_p))
        assert (e[0], e[2], e[4]) == (1, 2, None)  # BUFFER_POINTER, BUFFER_SIZE, END
        size = ctypes.c_uint64.from_address(e[3]).value
        args = ctypes.string_at(e[1], size)
    return {"f": f, "shape": (gx, gy, gz, bx, by, bz), "shared": shared, "stream": stream,
            "kernel_params": kernel_params, "args": args}


class FakeDriver:
    """A cuLaunchKernel that records its calls and refuses those `refuse(call)` names."""

    def __init__(self, refuse=lambda call: 0):
        self.calls: list[dict] = []
        self.refuse = refuse
        self.fn = LAUNCH_PROTO(self._launch)
        self.address = ctypes.cast(self.fn, ctypes.c_void_p).value

    def _launch(self, *a) -> int:
        call = seen_launch(*a)
        err = self.refuse(call)
        if not err:
            self.calls.append(call)
        return err


def pack(recs: LaunchRecords, i: int, f: int, args: bytes, shape=(1, 1, 1, 1, 1, 1), shared=0,
         stream=0, keep: list | None = None, repeats: list[bytes] = ()) -> None:
    """Record i: a launch of `f` with `args`, and one of the same for each of `repeats` (their
    argument bytes laid out one stride apart after `args`, as repeated frames lie)."""
    stride = len(args) + 7  # bytes between one launch's arguments and the next's
    laid = b"".join(a + b"\xee" * 7 for a in (args, *repeats))
    buf = ctypes.create_string_buffer(laid, len(laid) or 1)
    if keep is not None:
        keep.append(buf)
    RECORD.pack_into(recs.records, i * RECORD.size, f, stream, ctypes.addressof(buf), len(args),
                     stride, *shape, shared, 1 + len(repeats))


SYNC_PROTO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


def test_the_module_is_built():
    """`make test` installs kvmgpu with its C module; without it the cuda backend falls back
    to the slower cuda-bindings path, which a user would notice only in the benchmarks."""
    assert launcher.library_path() is not None
    assert launcher.load().launch is not None


def _stale_module(tmp_path, source: str) -> str:
    src = tmp_path / "stale.c"
    src.write_text(source)
    lib = tmp_path / "_launcher.stale.so"
    includes = subprocess.run(["python3-config", "--includes"], capture_output=True, text=True,
                              check=True).stdout.split()
    subprocess.run(["cc", "-shared", "-fPIC", *includes, str(src), "-o", str(lib)], check=True)
    return str(lib)


@pytest.mark.parametrize("source, why", [
    # the ctypes library of kvmgpu before the module (no PyInit__launcher)
    ("int kvmgpu_launch_records(void) { return 0; }\n", "another kvmgpu version or Python"),
    # a module without the calls this kvmgpu makes
    ("#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"_launcher\", 0, -1, 0};\n"
     "PyMODINIT_FUNC PyInit__launcher(void) { return PyModule_Create(&m); }\n",
     "no launch_records, count_repeats, launch, stream_synchronize, serve_repeats"),
    # the sixth session's module: 64-byte records, no repeats
    ("#include <Python.h>\nstatic PyObject *f(PyObject *s, PyObject *a) { Py_RETURN_NONE; }\n"
     "static PyMethodDef d[] = {{\"launch_records\", f, METH_VARARGS, 0}, {\"launch\", f, METH_VARARGS, 0},"
     " {\"stream_synchronize\", f, METH_VARARGS, 0}, {0}};\n"
     "static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"_launcher\", 0, -1, d};\n"
     "PyMODINIT_FUNC PyInit__launcher(void) { return PyModule_Create(&m); }\n",
     "another kvmgpu version (no count_repeats, serve_repeats)"),
])
def test_a_module_from_another_version_is_not_used(tmp_path, monkeypatch, caplog, source, why):
    """A `_launcher*.so` left from another kvmgpu version: the cuda backend is told so, with what
    to do, and launches through cuda-bindings instead of crashing."""
    lib = _stale_module(tmp_path, source)
    monkeypatch.setattr(launcher, "library_path", lambda: lib)
    monkeypatch.setattr(launcher, "_module", None)
    with caplog.at_level("WARNING", logger="kvmgpu.backend"):
        assert launcher.open_module() is None
    assert why in caplog.text and "reinstall kvmgpu" in caplog.text


def test_no_driver_function_is_refused_before_any_call():
    """A driver function's address of 0 (a failed lookup) is a clear error, never a call to NULL."""
    c, recs = launcher.load(), bytearray(RECORD.size)
    with pytest.raises(ValueError, match="no cuLaunchKernel"):
        c.launch(0, 0x1000, 1, 1, 1, 1, 1, 1, 0, None, bytearray(8), 0, 8)
    with pytest.raises(ValueError, match="no cuLaunchKernel"):
        c.launch_records(None, recs, 0, 1, 0)
    with pytest.raises(ValueError, match="no cuStreamSynchronize"):
        c.stream_synchronize(0, None)


def test_one_launch_reads_its_argument_bytes_where_they_are():
    drv, c = FakeDriver(), launcher.load()
    buf = bytearray(b"head" + struct.pack("<Qi", 0xABCDEF, -5) + b"tail")
    assert c.launch(drv.address, 0x1000, 2, 3, 4, 32, 2, 1, 64, None, buf, 4, 12) == 0
    assert c.launch(drv.address, 0x2000, 1, 1, 1, 1, 1, 1, 0, 0x77, buf, 0, 0) == 0
    (first, second) = drv.calls
    assert first["f"] == 0x1000 and first["shape"] == (2, 3, 4, 32, 2, 1) and first["shared"] == 64
    assert first["args"] == struct.pack("<Qi", 0xABCDEF, -5) and first["stream"] is None
    assert second["args"] is None and second["stream"] == 0x77  # no parameters: no extra at all
    refusing = FakeDriver(refuse=lambda call: OUT_OF_RESOURCES)
    assert c.launch(refusing.address, 0x1000, 1, 1, 1, 1, 1, 1, 0, None, buf, 0, 8) == OUT_OF_RESOURCES


@pytest.mark.parametrize("buf, start, nbytes, error, says", [
    (bytearray(16), 12, 8, ValueError, "argument bytes 12..20 outside a buffer of 16"),  # past the end
    (bytearray(16), -1, 4, ValueError, "outside a buffer of 16"),
    (bytearray(16), 0, -4, ValueError, "outside a buffer of 16"),
    (bytearray(16), 17, 0, ValueError, "outside a buffer of 16"),
    (b"\0" * 16, 0, 8, TypeError, "must be in a bytearray"),  # only the receive buffer's type
])
def test_one_launch_refuses_bytes_outside_its_buffer_and_launches_nothing(buf, start, nbytes, error,
                                                                          says):
    drv = FakeDriver()
    with pytest.raises(error, match=says):
        launcher.load().launch(drv.address, 0x1000, 1, 1, 1, 1, 1, 1, 0, None, buf, start, nbytes)
    assert drv.calls == []


def test_stream_synchronize_waits_on_the_stream_it_is_given():
    seen = []
    fn = SYNC_PROTO(lambda stream: seen.append(stream) or (700 if stream == 0xBAD else 0))
    address = ctypes.cast(fn, ctypes.c_void_p).value
    c = launcher.load()
    assert c.stream_synchronize(address, None) == 0
    assert c.stream_synchronize(address, 0x55) == 0
    assert c.stream_synchronize(address, 0xBAD) == 700
    assert seen == [None, 0x55, 0xBAD]


def test_records_are_launched_in_order_with_their_arguments():
    drv, keep = FakeDriver(), []
    recs = LaunchRecords(drv.address)
    pack(recs, 0, 0x1000, b"\x01" * 12, shape=(2, 3, 4, 32, 2, 1), shared=128, keep=keep)
    pack(recs, 1, 0x2000, b"", stream=0x77, keep=keep)  # no parameters: no extra at all
    pack(recs, 2, 0x1000, struct.pack("<Qi", 0xABCDEF, -5), keep=keep)
    assert recs.launch(0, 3) == (3, 0, 0)
    assert [c["f"] for c in drv.calls] == [0x1000, 0x2000, 0x1000]
    assert drv.calls[0]["shape"] == (2, 3, 4, 32, 2, 1) and drv.calls[0]["shared"] == 128
    assert drv.calls[0]["args"] == b"\x01" * 12 and drv.calls[0]["stream"] is None
    assert drv.calls[1]["args"] is None and drv.calls[1]["stream"] == 0x77
    assert drv.calls[2]["args"] == struct.pack("<Qi", 0xABCDEF, -5)
    assert all(c["kernel_params"] is None for c in drv.calls)


def test_a_refused_launch_stops_the_loop_there():
    drv, keep = FakeDriver(refuse=lambda c: OUT_OF_RESOURCES if c["f"] == 0xBAD else 0), []
    recs = LaunchRecords(drv.address)
    for i, f in enumerate((0x1, 0xBAD, 0x3)):
        pack(recs, i, f, b"", keep=keep)
    assert recs.launch(0, 3) == (1, 0, OUT_OF_RESOURCES)
    assert recs.launch(2, 1) == (3, 0, 0)
    assert [c["f"] for c in drv.calls] == [0x1, 0x3]


def test_a_record_with_repeats_launches_each_with_its_own_arguments():
    drv, keep = FakeDriver(), []
    recs = LaunchRecords(drv.address)
    args = [struct.pack("<Qi", i, -i) for i in range(4)]
    pack(recs, 0, 0x1000, args[0], shape=(2, 1, 1, 64, 1, 1), repeats=args[1:], keep=keep)
    pack(recs, 1, 0x2000, b"\x05" * 8, keep=keep)
    assert recs.launch(0, 2) == (2, 0, 0)
    assert [(c["f"], c["args"]) for c in drv.calls] == [(0x1000, a) for a in args] + [(0x2000, b"\x05" * 8)]
    assert {c["shape"] for c in drv.calls[:4]} == {(2, 1, 1, 64, 1, 1)}


def test_a_refused_repeat_is_named_by_its_record_and_place_and_the_loop_goes_on_after_it():
    """The worker restarts the loop with `skip` one past the refused launch: the launches before
    it are not made twice, those after it are made."""
    bad = struct.pack("<Q", 0xBAD)
    drv = FakeDriver(refuse=lambda c: OUT_OF_RESOURCES if c["args"] == bad else 0)
    recs, keep = LaunchRecords(drv.address), []
    args = [struct.pack("<Q", i) for i in (1, 2, 0xBAD, 4)]
    pack(recs, 0, 0x1000, b"\x00" * 8, keep=keep)
    pack(recs, 1, 0x1000, args[0], repeats=args[1:], keep=keep)
    pack(recs, 2, 0x3000, b"", keep=keep)
    assert recs.launch(0, 3) == (1, 2, OUT_OF_RESOURCES)
    assert recs.launch(1, 2, 3) == (3, 0, 0)
    assert [c["args"] for c in drv.calls] == [b"\x00" * 8, args[0], args[1], args[3], None]
    assert recs.launch(1, 1, 4) == (2, 0, 0)  # skipping all of a record's launches: none made
    assert len(drv.calls) == 5


def test_count_repeats_counts_whole_equal_records_and_skips_only_the_bytes_it_is_told():
    c = launcher.load()
    one = b"HEAD" + b"SQ" + b"TAIL" + b"args"  # size 14, head 10, skip 2 bytes at 4
    same = [b"HEAD" + bytes([i, i]) + b"TAIL" + b"ar%02d" % i for i in range(3)]
    buf = bytearray(b"xx" + one + b"".join(same))

    def count(data, limit=99, pos=2):
        return c.count_repeats(data, pos, 14, 10, 4, 2, limit)
    assert count(buf) == 3
    assert count(buf, limit=2) == 2 and count(buf, limit=0) == 0
    assert count(buf[:-1]) == 2  # the last is not whole
    assert count(buf + b"HEADzzTAIXargs") == 3  # one byte of the head differs
    changed = bytearray(buf)
    changed[2 + 14 + 14] = ord("h")  # the second repeat's first byte
    assert count(changed) == 1
    assert c.count_repeats(buf, 2, 14, 10, 0, 0, 99) == 0  # the sequence bytes differ, now compared


@pytest.mark.parametrize("pos, size, head, skip_at, skip_len, says", [
    (0, 8, 10, 0, 0, "no record of 8 bytes"),  # head longer than the record
    (40, 14, 10, 4, 2, "at 40 of a buffer of 30"),  # the record itself is not whole
    (-1, 14, 10, 4, 2, "at -1"),
    (0, 14, 10, 9, 2, "skipping 2 at 9"),  # the skipped bytes run past the head
    (0, 14, 0, 0, 0, "head 0"),
])
def test_count_repeats_refuses_a_record_outside_its_buffer(pos, size, head, skip_at, skip_len, says):
    with pytest.raises(ValueError, match=says):
        launcher.load().count_repeats(bytearray(30), pos, size, head, skip_at, skip_len, 5)


# --- the worker's queued launches through the C loop, run on the sim backend ----------------------

class SimThroughC(SimBackend):
    """The sim backend with `launch_records`: the worker packs records, the C loop calls the fake
    driver, which finds the function by its address and runs the launch on the sim backend."""

    def __init__(self, refuse=lambda call: 0, **kw):
        super().__init__(**kw)
        self._functions: dict[int, object] = {}
        self.driver = FakeDriver(refuse=self._run_or_refuse)
        self._refuse = refuse
        c, fn = launcher.load(), self.driver.address

        def launch_in(f, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes) -> None:
            err = c.launch(fn, f.address, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes)
            if err:
                raise CudaError(err, "cuLaunchKernel")
        self.capabilities = Capabilities(launch_records=LaunchRecords(self.driver.address),
                                         launch_in=launch_in, launch_flat=self.launch_flat)

    def module_get_function(self, module, name):
        fn, layout = super().module_get_function(module, name)
        fn.address = 0x10000 + len(self._functions) * 0x100
        self._functions[fn.address] = fn
        return fn, layout

    def _run_or_refuse(self, call) -> int:
        err = self._refuse(call)
        if not err:
            self.launch_flat(self._functions[call["f"]], *call["shape"], call["shared"], None,
                             call["args"])
        return err


def refuse_grid_7(call) -> int:
    return OUT_OF_RESOURCES if call["shape"][0] == 7 else 0


@pytest.fixture
def host_c(tmp_path):
    h = Host(tmp_path, backend=lambda **kw: SimThroughC(refuse=refuse_grid_7, **kw))
    yield h
    h.close()


@pytest.fixture
def vadd_c(host_c):
    g = host_c.guest(window=1 << 20)
    n = 64
    a, b, c, d = (g.alloc(4 * n) for _ in range(4))
    g.put(a, floats(range(n)))
    g.put(b, floats([1.0] * n))
    f, _ = g.function(g.load(offset=64 * 1024), "vector_add")
    return g, f, (a, b, c, d), n


def vadd_args(x, y, out, n) -> bytes:
    return struct.pack("<QQQi", x, y, out, n)


def test_queued_launches_run_through_the_c_loop(host_c, vadd_c):
    g, f, (a, b, c, d), n = vadd_c
    frames = [g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(a, b, c, n), queued=True),
              g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(c, b, d, n), queued=True)]
    assert g.send(frames) == []
    g.ok(Op.CTX_SYNCHRONIZE)
    assert unfloats(g.get(d, 4 * n)) == [i + 2.0 for i in range(n)]  # the second saw the first
    assert len(host_c.vgpu.backend.driver.calls) == 2


def test_a_bad_launch_in_a_batch_keeps_the_order_and_its_own_error(host_c, vadd_c):
    """A launch that fails the worker's checks goes the general way between the packed ones:
    those before it are launched first, those after it still run, and its error (not another's)
    comes at the next synchronising call."""
    g, f, (a, b, c, d), n = vadd_c
    frames = [g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(a, b, c, n), queued=True),
              g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(c, b, d, n), queued=True),
              g.frame(Op.MEMCPY_DTOD, c, d, 4 * n, 0, queued=True),  # must see both launches
              g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=b"short", queued=True),
              g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(c, b, d, n), queued=True)]
    bad_seq = g.conn.next_seq() - 2  # the short one (next_seq counts on from the last frame)
    assert g.send(frames) == []
    r = g.call(Op.CTX_SYNCHRONIZE)
    assert r.status == CUresult.CUDA_ERROR_INVALID_VALUE
    assert f"LAUNCH (queued, seq {bad_seq})".encode() in r.blob and b"5 bytes of arguments" in r.blob
    assert unfloats(g.get(d, 4 * n)) == [i + 3.0 for i in range(n)]
    assert len(host_c.vgpu.backend.driver.calls) == 3


def test_a_launch_the_driver_refuses_is_reported_and_the_rest_go_on(host_c, vadd_c):
    g, f, (a, b, c, d), n = vadd_c
    refused_seq = g.conn.next_seq() + 1  # the first frame's
    frames = [g.frame(Op.LAUNCH, f, 7, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(a, b, c, n), queued=True),
              g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(a, b, d, n), queued=True)]
    assert g.send(frames) == []
    r = g.call(Op.CTX_SYNCHRONIZE)
    assert r.status == OUT_OF_RESOURCES
    assert r.blob.startswith(f"LAUNCH (queued, seq {refused_seq}): ".encode()) and b"cuLaunchKernel" in r.blob
    assert unfloats(g.get(d, 4 * n)) == [i + 1.0 for i in range(n)]
    assert unfloats(g.get(c, 4 * n)) == [0.0] * n  # the refused one did nothing
    g.ok(Op.CTX_SYNCHRONIZE)  # reported once


def test_a_long_run_is_launched_in_pieces(host_c, vadd_c):
    g, f, (a, b, c, d), n = vadd_c
    count = launcher.CAPACITY * 2 + 3
    frames = [g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(c, b, c, n), queued=True)
              for _ in range(count)]
    assert g.send(frames) == []
    g.ok(Op.CTX_SYNCHRONIZE)
    assert unfloats(g.get(c, 4 * n)) == [float(count)] * n
    assert len(host_c.vgpu.backend.driver.calls) == count


def test_a_run_of_one_launch_goes_the_direct_way(host_c, vadd_c):
    """A launch sent alone with its synchronise (the round-trip pattern) is not worth a record: it
    goes through the module's single launch, its argument bytes read in the receive buffer, with
    the same result; a refused one is that launch's error at the synchronise."""
    g, f, (a, b, c, d), n = vadd_c
    frames = [g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(a, b, c, n), queued=True),
              g.frame(Op.CTX_SYNCHRONIZE)]
    (r,) = g.send(frames)
    assert r.status == 0
    assert unfloats(g.get(c, 4 * n)) == [i + 1.0 for i in range(n)]
    (call,) = host_c.vgpu.backend.driver.calls
    assert call["args"] == vadd_args(a, b, c, n)
    frames = [g.frame(Op.LAUNCH, f, 7, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(a, b, d, n), queued=True),
              g.frame(Op.CTX_SYNCHRONIZE)]
    (r,) = g.send(frames)
    assert r.status == OUT_OF_RESOURCES and b"cuLaunchKernel" in r.blob
    assert unfloats(g.get(d, 4 * n)) == [0.0] * n


# --- repeats: frames that differ from a validated launch only in seq and argument bytes ----------

def test_repeated_launches_each_run_with_their_own_arguments_in_order(host_c, vadd_c):
    """A launch repeated (the same function, shape and stream; other arguments) is checked once
    and launched as often as it came, each time with its own argument bytes, in the order sent,
    around other launches; each is counted."""
    g, f, (a, b, c, d), n = vadd_c
    other = g.function(g.load(offset=64 * 1024), "vector_add")[0]  # same kernel, another handle
    host_c.vgpu.calls.clear()
    steps = [(f, c, b, c), (f, c, b, c), (f, c, b, c), (other, c, c, d), (f, c, b, c), (f, d, b, d)]
    frames = [g.frame(Op.LAUNCH, fn, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(x, y, out, n), queued=True)
              for fn, x, y, out in steps]
    assert g.send(frames) == []
    g.ok(Op.CTX_SYNCHRONIZE)
    # c = 3 (three times c += 1), d = c + c = 6, c = 4, d = 7
    assert unfloats(g.get(c, 4 * n)) == [4.0] * n and unfloats(g.get(d, 4 * n)) == [7.0] * n
    calls = host_c.vgpu.backend.driver.calls
    assert [call["args"] for call in calls] == [vadd_args(x, y, out, n) for _, x, y, out in steps]
    assert host_c.vgpu.calls[Op.LAUNCH] == len(steps)


def test_repeats_split_across_reads_all_run_once(host_c, vadd_c):
    """The last repeat not yet whole waits for the rest of its bytes, as any frame does."""
    g, f, (a, b, c, d), n = vadd_c
    frames = b"".join(g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(c, b, c, n),
                              queued=True) for _ in range(5))
    cut = len(frames) - 7  # inside the fifth frame's arguments
    assert g.channel.receive(frames[:cut]) == b""
    assert len(host_c.vgpu.backend.driver.calls) == 4
    assert g.channel.receive(frames[cut:]) == b""
    g.ok(Op.CTX_SYNCHRONIZE)
    assert unfloats(g.get(c, 4 * n)) == [5.0] * n


def test_a_repeated_bad_launch_fails_every_time_with_the_first_ones_error(host_c, vadd_c):
    """A launch that fails the worker's checks fails for each of its repeats (none reaches the
    driver); the synchronise reports the first, and a good launch after them still runs."""
    g, f, (a, b, c, d), n = vadd_c
    host_c.vgpu.errors.clear()
    first_seq = g.conn.next_seq() + 1
    frames = [g.frame(Op.LAUNCH, f, 1, 1, 1, 0, 1, 1, 0, 0, blob=vadd_args(a, b, c, n), queued=True)
              for _ in range(3)]
    frames.append(g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(a, b, d, n), queued=True))
    assert g.send(frames) == []
    r = g.call(Op.CTX_SYNCHRONIZE)
    assert r.status == CUresult.CUDA_ERROR_INVALID_VALUE
    assert r.blob.startswith(f"LAUNCH (queued, seq {first_seq}): ".encode())
    assert host_c.vgpu.errors[Op.LAUNCH] == 3
    assert len(host_c.vgpu.backend.driver.calls) == 1
    assert unfloats(g.get(d, 4 * n)) == [i + 1.0 for i in range(n)]


def _refusing_host(tmp_path, refused: set, code: int) -> Host:
    """A host whose fake driver refuses, with `code`, the launches whose argument bytes are in
    `refused` (filled in once the test knows its pointers)."""
    return Host(tmp_path, backend=lambda **kw: SimThroughC(
        refuse=lambda call: code if call["args"] in refused else 0, **kw))


def test_a_refused_repeat_is_reported_by_its_own_seq_and_the_repeats_after_it_run(tmp_path):
    refused: set = set()
    h = _refusing_host(tmp_path, refused, OUT_OF_RESOURCES)
    try:
        g = h.guest(window=1 << 20)
        n = 16
        a, b, c = (g.alloc(4 * n) for _ in range(3))
        g.put(b, floats([1.0] * n))
        f, _ = g.function(g.load(offset=64 * 1024), "vector_add")
        refused.add(vadd_args(a, b, a, n))
        plan = [(c, b, c), (c, b, c), (a, b, a), (c, b, c), (c, b, c)]
        first = g.conn.next_seq() + 1  # (next_seq counts one on: the first frame's is the one after)
        seqs = [first + i for i in range(len(plan))]
        frames = [g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(*p, n), queued=True)
                  for p in plan]
        assert g.send(frames) == []
        r = g.call(Op.CTX_SYNCHRONIZE)
        assert r.status == OUT_OF_RESOURCES
        assert r.blob.startswith(f"LAUNCH (queued, seq {seqs[2]}): ".encode())
        assert unfloats(g.get(c, 4 * n)) == [4.0] * n  # the four others ran
        assert unfloats(g.get(a, 4 * n)) == [0.0] * n
        g.ok(Op.CTX_SYNCHRONIZE)  # reported once
    finally:
        h.close()


def test_repeats_after_a_launch_that_broke_the_context_are_not_made(tmp_path):
    """A sticky error in the middle of a run of repeats: the launches after it fail with the
    broken context's error, one each, without reaching the driver."""
    refused: set = set()
    h = _refusing_host(tmp_path, refused, CUresult.CUDA_ERROR_ILLEGAL_ADDRESS)
    try:
        g = h.guest(window=1 << 20)
        n = 16
        a, b, c = (g.alloc(4 * n) for _ in range(3))
        f, _ = g.function(g.load(offset=64 * 1024), "vector_add")
        refused.add(vadd_args(a, b, a, n))
        plan = [(c, b, c), (a, b, a), (c, b, c), (c, b, c)]
        h.vgpu.errors.clear()
        frames = [g.frame(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vadd_args(*p, n), queued=True)
                  for p in plan]
        assert g.send(frames) == []
        assert len(h.vgpu.backend.driver.calls) == 1
        assert h.vgpu.broken is not None and h.vgpu.errors[Op.LAUNCH] == 3
        r = g.call(Op.CTX_SYNCHRONIZE)
        assert r.status == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    finally:
        h.close()


def _expanded(launches: list, buf) -> list:
    """take_launches' triples as one (fields, start) pair per frame, each repeat with its own seq."""
    out = []
    for t, start, more in launches:
        stride = HEADER_SIZE + t[5]
        for j in range(1 + more):
            at = start + j * stride
            out.append((t[:4] + (launch_seq(buf, at),) + t[5:], at))
    return out


def _launch_frames(conn: Connection, plans) -> bytearray:
    return bytearray(b"".join(conn.send_call(7, conn.next_seq(), Op.LAUNCH, shape, blob, True)
                              for shape, blob in plans))


SAME = ((3, 1, 1, 1, 64, 1, 1, 0, 0), struct.pack("<Qi", 1, 2))


@pytest.mark.parametrize("at", [i for i in range(protocol._LAUNCH_FIXED) if not 8 <= i < 12])
def test_a_frame_is_a_repeat_only_when_every_checked_byte_is_the_same(at):
    """take_launches with the C module's count_repeats hands over exactly the frames it hands over
    without it, with the same fields: a frame with any byte of its header, op header or args
    changed (all but its seq) is decoded and checked on its own (and, where the change breaks a
    rule, left to next_event)."""
    client, _ = handshaken()
    buf = _launch_frames(client, [SAME, SAME, SAME, SAME])
    stride = len(buf) // 4
    buf[2 * stride + at] ^= 0x5A  # the third frame
    found = []
    for repeats in (launcher.load().count_repeats, None):
        _, host = handshaken()
        host.receive_data(bytes(buf))
        launches = host.take_launches(256, repeats)
        found.append((_expanded(launches, host.buffer), host.buffer[host._pos:]))
        if repeats is not None:
            assert launches[0][2] == 1  # the second frame is a repeat of the first
    assert found[0] == found[1]


def test_take_launches_hands_over_repeats_with_their_count_and_no_more_than_its_limit():
    client, host = handshaken()
    other = ((1, 1, 1, 1, 32, 1, 1, 0, 0), struct.pack("<Qi", 1, 2))
    buf = _launch_frames(client, [SAME] * 3 + [other] + [SAME] * 4)
    host.receive_data(bytes(buf))
    repeats = launcher.load().count_repeats
    launches = host.take_launches(6, repeats)
    assert [(t[8:11], more) for t, _, more in launches] == [((3, 1, 1), 2), ((1, 1, 1), 0), ((3, 1, 1), 1)]
    launches = host.take_launches(6, repeats)
    assert [more for _, _, more in launches] == [1] and host.drained()


@pytest.mark.parametrize("first, count, skip", [(-1, 1, 0), (0, 2, 0), (0, 1, -1), (1, 1, 0)])
def test_launch_records_refuses_records_outside_its_buffer_and_launches_nothing(first, count, skip):
    drv = FakeDriver()
    recs = LaunchRecords(drv.address, capacity=1)
    pack(recs, 0, 0x1000, b"\x01" * 8, keep=[])
    with pytest.raises(ValueError, match="of a buffer of 1"):
        recs.launch(first, count, skip)
    assert drv.calls == []

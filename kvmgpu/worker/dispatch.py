"""Op handlers: a guest's call, checked against its session's tables, goes to the backend.

Every argument is hostile. Each op's arguments are checked as the specification's kinds say
(guest-agent/kvmgpu_wire/spec.py) by its generated request (requests.py, kvmgpu/worker/checks.py)
before its handler runs: a handler works with checked, resolved values. The few ops whose checks
kinds cannot say (launch, module load, the staged copy) check in their handlers, with the same
functions. A failure is a `CudaError`; `dispatch` turns the outcome into a reply, or, for a
queued call, holds it for the session's next synchronising call: the session's rules are in
state.py. Thin calls' handlers are made per backend from the specification (`bind`).
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from kvmgpu_wire import spec
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.ops import PROCESS_FORMAT
from kvmgpu_wire.protocol import HEADER_SIZE, LAUNCH_BODY, MAX_PIECES, Call, Op, launch_seq, pack_params

from ..backend.base import CudaError
from ..backend.launcher import RECORD
from . import checks, graphs
from .requests import CHECKS, THIN
from .session import Function, Session
from .state import REPORTS, ImageMiss, error_reply, failed, hold, report, unusable

if TYPE_CHECKING:
    from .vgpu import VGpu


# What the worker keeps for a VM, all its sessions together: allocations, module globals and
# handles (each costs the worker host memory, however little device memory it names).
MAX_OBJECTS = 1 << 20
MIN_PIECE = 64 << 10  # the smallest piece of a MEMCPY_DTOH_PIECES (each piece costs an event wait)
OK = ((), b"")
_PROCESS = struct.Struct(PROCESS_FORMAT)



def dispatch(vg: VGpu, s: Session, call: Call):
    """(status, values, blob) for the reply, or None for a queued call (the session's rules:
    kvmgpu/worker/state.py)."""
    op = call.op
    vg.calls[op] += 1
    if not call.queued and op in REPORTS and s.pending_error is not None:
        return report(s)
    held = s.objects if op in _HOLDING else -1
    try:
        if vg.broken is not None:
            raise unusable(vg)
        check = CHECKS[op]
        values, blob = vg.handlers[op](vg, s, None if check is None else check(s, call), call)
    except Exception as e:
        code, detail = failed(vg, s, op, e)
    else:
        return None if call.queued else (0, values, blob)
    finally:
        if held >= 0:
            vg.objects += s.objects - held  # what the VM holds, counted (_vm_room)
    if call.queued:
        hold(s, op, call.seq, code, detail)
        return None
    return error_reply(op, code, detail)


def wait(vg: VGpu, s: Session, op: Op, stream: int):
    """STREAM_SYNCHRONIZE or CTX_SYNCHRONIZE as `Connection.take_wait` decodes them (the hot path's
    other half: a launch + synchronise message), with no Call built: what `dispatch` does for
    them, to the same reply. (status, values, blob)."""
    vg.calls[op] += 1
    if s.pending_error is not None:
        return report(s)
    try:
        if vg.broken is not None:
            raise unusable(vg)
        if op is _STREAM_SYNCHRONIZE:
            vg.waits.stream_synchronize(s.stream(stream))
        else:
            vg.waits.synchronize()
    except Exception as e:
        return wait_failed(vg, s, op, e)
    return _WAITED


def wait_failed(vg: VGpu, s: Session, op: Op, e: Exception):
    """The reply to a synchronise whose wait failed with `e` (as `wait` gives it; the caller counted
    the call)."""
    return error_reply(op, *failed(vg, s, op, e))


_STREAM_SYNCHRONIZE = Op.STREAM_SYNCHRONIZE
_WAITED = (0, (), b"")
assert _STREAM_SYNCHRONIZE in REPORTS and Op.CTX_SYNCHRONIZE in REPORTS  # (wait reports, always)


def _vm_room(vg: VGpu) -> None:
    """OUT_OF_MEMORY where the VM already holds MAX_OBJECTS (a session's own tables are checked
    by the specification's NewHandle kind: checks.room)."""
    if vg.objects >= MAX_OBJECTS:
        raise CudaError(CUresult.CUDA_ERROR_OUT_OF_MEMORY,
                        f"the VM holds {MAX_OBJECTS} allocations and handles, the most a worker keeps")


def _over_quota(vg: VGpu, nbytes: int, what: str) -> CudaError:
    return CudaError(CUresult.CUDA_ERROR_OUT_OF_MEMORY,
                     f"{what} would take {nbytes} bytes, more than the vGPU's quota has left "
                     f"({vg.quota.used} of {vg.quota.limit} bytes in use)")


# --- memory --------------------------------------------------------------------------------------

def mem_alloc(vg: VGpu, s: Session, r, call):
    nbytes = r.nbytes
    _vm_room(vg)
    charge = vg.backend.allocation_size(nbytes)  # its size on the GPU (granularity), not as asked
    if not vg.quota.charge(charge):
        raise _over_quota(vg, charge, f"an allocation of {nbytes} bytes")
    try:
        ptr = vg.backend.mem_alloc(nbytes)
    except BaseException:
        vg.quota.release(charge)
        raise
    s.add_range(ptr, nbytes, charge=charge)
    return (ptr,), b""


def mem_free(vg, s: Session, r, call):
    if r.dptr_range is None:
        return OK
    vg.backend.mem_free(r.dptr)
    s.drop_range(r.dptr)
    vg.quota.release(r.dptr_range.charge)
    return OK


def mem_get_info(vg, s, r, call):
    return (vg.quota.free, vg.quota.limit), b""


def vgpu_processes(vg, s, r, call):
    """The guest's process list (its NVML's): pid, sessions and device memory of each process."""
    procs = vg.processes()
    return (len(procs),), b"".join(_PROCESS.pack(*p) for p in procs)


def vgpu_utilization(vg, s, r, call):
    gpu, window_ms = vg.utilisation()
    return (gpu, 0, window_ms), b""  # memory: not measured (docs/guest.md, NVML)


def window_device_pointer(vg, s: Session, r, call):
    return (vg.backend.region_device_pointer() + s.window.offset,), b""


def memcpy_htod(vg, s: Session, r, call):
    if s.captures:
        graphs.refuse_captured(s, call.args[3], "a copy from the host")
    if r.nbytes:
        vg.waits.memcpy_htod(r.dst, r.offset, r.nbytes, r.stream, not call.queued)
        vg.bytes["htod"] += r.nbytes
    return OK


def memcpy_htod_staged(vg, s: Session, r, call):
    """cuMemcpyHtoD that the guest did not wait for: copied now and waited for (in null-stream
    order, as natively), then the call's seq goes to the u32 at window offset `done`: the guest
    refills its staging bytes once it reads there a seq at or past the one it sent. Only this
    worker writes there; what the guest writes there misleads only the guest itself."""
    dst, offset, nbytes, done = call.args
    at = checks.window(s, done, 4, "done", 4)
    try:
        if nbytes:
            checks.device_range(s, dst, nbytes, "dst")
            host = checks.window(s, offset, nbytes, "offset")
            vg.waits.memcpy_htod(dst, host, nbytes, None, True)
            vg.bytes["htod"] += nbytes
    finally:
        vg.region.view[at: at + 4].cast("I")[0] = call.seq  # one aligned store: never torn
    return OK


def memcpy_dtoh(vg, s: Session, r, call):
    if s.captures:
        graphs.refuse_captured(s, call.args[3], "a copy to the host")
    if r.nbytes:
        vg.waits.memcpy_dtoh(r.offset, r.src, r.nbytes, r.stream)
        vg.bytes["dtoh"] += r.nbytes
    return OK


def memcpy_dtoh_pieces(vg, s: Session, r, call):
    """cuMemcpyDtoH whose pieces the guest copies out as they land: after each piece the bytes
    landed so far go to the u32 at window offset `landed`. The pieces are at least MIN_PIECE and
    at most MAX_PIECES (a smaller `piece` is made bigger). What the guest writes at `landed`
    misleads only the guest itself."""
    if s.captures:
        graphs.refuse_captured(s, call.args[3], "a copy to the host")
    if not r.nbytes:
        return OK
    word = vg.region.view[r.landed: r.landed + 4].cast("I")
    piece = max(r.piece, MIN_PIECE, -(-r.nbytes // MAX_PIECES))

    def tell(n: int) -> None:
        word[0] = n  # one aligned store: never torn

    vg.waits.memcpy_dtoh(r.offset, r.src, r.nbytes, r.stream, piece, tell)
    vg.bytes["dtoh"] += r.nbytes
    return OK


def memcpy_dtod(vg, s: Session, r, call):
    if r.nbytes:
        vg.waits.memcpy_dtod(r.dst, r.src, r.nbytes, r.stream, not call.queued)
        vg.bytes["dtod"] += r.nbytes
    return OK


def _memset(width: int):
    def memset(vg, s: Session, r, call):
        if r.count:
            vg.waits.memset(r.dst, r.value, r.count, width, r.stream, not call.queued)
        return OK
    return memset


def memcpy_2d(vg, s: Session, r, call):
    dst, dpitch, src, spitch, width, height, stream = call.args
    checks.rows(s, dst, dpitch, width, height, "dst")
    checks.rows(s, src, spitch, width, height, "src")
    st = s.stream(stream)
    if width and height:
        vg.waits.memcpy_2d(dst, dpitch, src, spitch, width, height, st, not call.queued)
        vg.bytes["dtod"] += width * height
    return OK


def tensor_map_encode_tiled(vg, s: Session, r, call):
    dtype, rank, address, interleave, swizzle, l2, fill = call.args
    checks.value(dtype, spec.TENSOR_MAP_TYPES - 1, "dtype")
    checks.length(rank, "rank", 1, 5)
    for value, top, name in ((interleave, 2, "interleave"), (swizzle, 6, "swizzle"), (l2, 3, "l2"), (fill, 1, "fill")):
        checks.value(value, top, name)
    dims, strides, box, estrides = checks.tensor(s, address, rank, dtype, call.blob)
    encoded = vg.backend.tensor_map_encode_tiled(dtype, rank, address, dims, strides, box, estrides,
                                                 interleave, swizzle, l2, fill)
    return (encoded,), b""


def tensor_map_encode_im2col(vg, s: Session, r, call):
    dtype, rank, address, interleave, swizzle, l2, fill = call.args
    checks.value(dtype, spec.TENSOR_MAP_TYPES - 1, "dtype")
    checks.length(rank, "rank", 3, 5)
    for value, top, name in ((interleave, 2, "interleave"), (swizzle, 6, "swizzle"), (l2, 3, "l2"), (fill, 1, "fill")):
        checks.value(value, top, name)
    dims, strides, lower, upper, estrides, channels, pixels = checks.tensor_im2col(s, address, rank, dtype, call.blob)
    encoded = vg.backend.tensor_map_encode_im2col(dtype, rank, address, dims, strides, lower, upper, channels,
                                                  pixels, estrides, interleave, swizzle, l2, fill)
    return (encoded,), b""


# --- modules -------------------------------------------------------------------------------------

def module_load(vg: VGpu, s: Session, r, call):
    offset, nbytes = call.args
    digest = checks.digest(call.blob)
    checks.room(s, "modules")
    _vm_room(vg)
    module = vg.modules.acquire(digest)
    if module is None:
        if nbytes == 0:
            raise ImageMiss(CUresult.CUDA_ERROR_NOT_FOUND, "the host does not have this image; send it")
        start = checks.window(s, offset, nbytes, "offset")
        image = bytes(vg.region.view[start: start + nbytes])  # a copy the guest cannot change
        if hashlib.sha256(image).digest() != digest:
            checks.invalid("the image in the window does not match its sha256")
        loaded = vg.backend.module_load(image)
        try:
            charge = vg.backend.module_memory(loaded, image)  # its globals
            if not vg.quota.charge(charge):
                raise _over_quota(vg, charge, "the module's .global variables")
        except BaseException:
            vg.backend.module_unload(loaded)
            raise
        module = vg.modules.add(digest, loaded, nbytes, charge)
    handle = s.new_handle()
    s.modules[handle] = digest
    return (handle,), b""


def module_unload(vg: VGpu, s: Session, r, call):
    handle, digest = r.module_handle, r.module
    del s.modules[handle]
    for fh in [fh for fh, f in s.functions.items() if f.module == handle]:
        del s.functions[fh]
    if digest not in s.modules.values():
        for ptr in [p for p, g in s.ranges.items() if g.digest == digest]:
            s.drop_range(ptr)
    vg.modules.release(digest)
    return OK


def module_get_function(vg: VGpu, s: Session, r, call):
    _vm_room(vg)
    fn, layout = vg.backend.module_get_function(vg.modules.get(r.module), r.name)
    layout = [(int(o), int(z)) for o, z in layout]
    arg_bytes = max((o + z for o, z in layout), default=0)
    fh = s.new_handle()
    s.functions[fh] = Function(r.module_handle, fn, layout, arg_bytes)
    return (fh, len(layout)), pack_params(layout)


def module_get_global(vg: VGpu, s: Session, r, call):
    ptr, size = vg.backend.module_get_global(vg.modules.get(r.module), r.name)
    if size > 0 and ptr not in s.ranges:
        _vm_room(vg)
        s.add_range(ptr, size, r.module)
    return (ptr, size), b""


# --- launches ------------------------------------------------------------------------------------

def _launch_limits(vg: VGpu) -> tuple:
    """The device's launch limits, read once per device info (a new context keeps the GPU)."""
    cached = getattr(vg, "_launch_limits", None)
    if cached is not None and cached[0] is vg.info:
        return cached[1]
    a = vg.attribute
    limits = (a(5, 2147483647), a(6, 65535), a(7, 65535), a(2, 1024), a(3, 1024), a(4, 64),
              a(1, 1024), a(97, a(8, 49152)))  # (the opt-in shared memory: the driver checks the
    # kernel's own limit, which FUNC_SET_ATTRIBUTE may raise past 48 KiB, at the launch)
    vg._launch_limits = (vg.info, limits)
    return limits


_DIMS = ("grid x", "grid y", "grid z", "block x", "block y", "block z")


def _check_launch(vg: VGpu, s: Session, args, blob):
    """Validate a LAUNCH; (backend function, backend stream) or CudaError."""
    fh, gx, gy, gz, bx, by, bz, shared, stream = args
    fn = s.function(fh)
    st = s.stream(stream)
    gxm, gym, gzm, bxm, bym, bzm, threads, smem = _launch_limits(vg)
    if not (1 <= gx <= gxm and 1 <= gy <= gym and 1 <= gz <= gzm
            and 1 <= bx <= bxm and 1 <= by <= bym and 1 <= bz <= bzm):
        for dim, value, top in zip(_DIMS, args[1:7], (gxm, gym, gzm, bxm, bym, bzm)):
            checks.length(value, dim, 1, top)
    if bx * by * bz > threads:
        checks.invalid(f"block of {bx * by * bz} threads, more than {threads}")
    if shared > smem:
        checks.invalid(f"{shared} bytes of dynamic shared memory, more than {smem}")
    if len(blob) != fn.arg_bytes:
        checks.invalid(f"{len(blob)} bytes of arguments, the function takes {fn.arg_bytes}")
    return fn.backend, st


def launch(vg: VGpu, s: Session, r, call):
    fn, st = _check_launch(vg, s, call.args, call.blob)
    if vg.gate is not None:
        vg.gate.before_launch()  # may wait for this VM's turn on the GPU
    a = call.args
    vg.backend.launch(fn, (a[1], a[2], a[3]), (a[4], a[5], a[6]), a[7], st, call.blob)
    return OK


def launch_queued(vg: VGpu, s: Session, seq: int, args, blob: bytes) -> None:
    """A QUEUED LAUNCH without building a Call: the same checks and the same error handling as
    `dispatch` (the first failure is kept for the session's next synchronising call). The caller
    counts the call in `vg.calls`."""
    try:
        if vg.broken is not None:
            raise unusable(vg)
        fh, gx, gy, gz, bx, by, bz, shared, stream = args
        f = s.functions.get(fh)
        st = None if stream == 0 else s.streams.get(stream)
        gxm, gym, gzm, bxm, bym, bzm, threads, smem = _launch_limits(vg)
        if (f is not None and (stream == 0 or st is not None) and len(blob) == f.arg_bytes
                and 1 <= gx <= gxm and 1 <= gy <= gym and 1 <= gz <= gzm and 1 <= bx <= bxm
                and 1 <= by <= bym and 1 <= bz <= bzm and bx * by * bz <= threads and shared <= smem):
            fn = f.backend  # every check of _check_launch passed
        else:
            fn, st = _check_launch(vg, s, args, blob)  # raises the same error as the slow path
        gate = vg.gate
        if gate is not None:
            gate.before_launch()  # may wait for this VM's turn on the GPU
        vg.backend.launch(fn, (gx, gy, gz), (bx, by, bz), shared, st, blob)
    except Exception as e:
        launch_failed(vg, s, seq, e)


def launch_failed(vg: VGpu, s: Session, seq: int, e: Exception) -> None:
    """Keep a queued launch's failure for the session's next synchronising call (as `dispatch`)."""
    hold(s, _LAUNCH, seq, *failed(vg, s, _LAUNCH, e))


_LAUNCH = Op.LAUNCH


def launch_run(vg: VGpu, cid: int, launches: Sequence[tuple], buf: bytearray) -> int:
    """A run of QUEUED LAUNCH frames from channel `cid` (`Connection.take_launches` triples, their
    parameter bytes in `buf`), with what every launch needs looked up once per run. Each launch
    passes exactly the checks of `_check_launch` (session, function, stream, grid, block, threads,
    shared memory, argument size) inline; any launch that fails one, a broken context, or a
    backend without a queued-launch path goes through `launch_queued`, which gives the same error
    the general path gives. A launch's repeats (the frames right after it that differ from it only
    in their sequence number and argument bytes) pass or fail its checks with it and go the same
    way. Returns how many launches were on a live session (the caller counts them).

    The launches go, in the order received, through the first the backend has of:
    `launch_records` (the C loop, kvmgpu/backend/launcher.py: each validated launch is packed,
    with its repeats, into one record and the records are launched together, at the end of the
    run, when the buffer is full, and before a launch that goes the general way), `launch_in` (one
    call a launch), and `launch_flat`. The first two read each launch's parameter bytes where they
    are in `buf` (nothing resizes it during the run). A run of one launch and no repeats (a launch
    and a synchronise in one message) takes `launch_in`: no record to pack, no buffer address to
    take. Repeats come only with `launch_records` (the channel asks for them only then); without
    it they would go through `launch_queued` one by one.

    The gate's `before_launch` comes right before the launches go to the driver (for packed
    records: before the C loop, so the meter's run does not start while they are being checked
    and packed), and only when `free_until` says it has something to do (a run to open, a slice
    to end)."""
    sessions = vg.sessions
    caps = vg.capabilities
    records = caps.launch_records if len(launches) > 1 or launches[0][2] else None
    one = caps.launch_in if records is None else None
    flat = caps.launch_flat
    fast = records is not None or one is not None or flat is not None
    base = 0
    if records is not None:
        holder = ctypes.c_char.from_buffer(buf)
        base = ctypes.addressof(holder)
        del holder  # no export left: the buffer may grow again once the run is done
    gate = vg.gate
    if gate is not None:
        before, clock = gate.before_launch, gate.clock
        until = gate.free_until()
    packed = 0
    if records is not None:
        pack, rsize, rbuf, cap = RECORD.pack_into, RECORD.size, records.records, records.capacity
        owners: list = []  # (session, start, count, stride) of each packed record

        def launch_packed() -> int:
            """Launch the packed records; a launch the driver refuses is that launch's error, as
            in `launch_failed`, and those after it go on (or fail, if the context broke)."""
            nonlocal until
            if gate is not None and clock() >= until:
                until = before()  # may wait for this VM's turn on the GPU
            first, skip = 0, 0
            while first < packed:
                first, skip, err = records.launch(first, packed - first, skip)
                if not err:
                    break
                s_, start_, count_, stride_ = owners[first]
                launch_failed(vg, s_, launch_seq(buf, start_ + skip * stride_),
                              CudaError(err, "cuLaunchKernel"))
                skip += 1
                if vg.broken is not None:
                    for s_, start_, count_, stride_ in owners[first:packed]:
                        for j in range(skip, count_):
                            launch_failed(vg, s_, launch_seq(buf, start_ + j * stride_), unusable(vg))
                        skip = 0
                    break
            owners.clear()
            return 0

    gxm, gym, gzm, bxm, bym, bzm, threads, smem = _launch_limits(vg)
    last_sid, s = None, None
    functions: dict[int, Function] = {}
    streams: dict[int, Any] = {}
    n = 0
    for t, start, more in launches:
        _, _, _, sid, seq, length, _, _, fh, gx, gy, gz, bx, by, bz, shared, stream = t
        if sid != last_sid:
            last_sid, s = sid, sessions.get((cid, sid))
            if s is not None:
                functions, streams = s.functions, s.streams
        if s is None:
            continue  # a queued call on no session: dropped, as in Channel._handle
        n += 1 + more
        f = functions.get(fh)
        st = None if stream == 0 else streams.get(stream)
        nbytes = length - LAUNCH_BODY
        if (not fast or vg.broken is not None or f is None or (stream != 0 and st is None)
                or nbytes != f.arg_bytes or not (1 <= gx <= gxm and 1 <= gy <= gym and 1 <= gz <= gzm
                                                 and 1 <= bx <= bxm and 1 <= by <= bym
                                                 and 1 <= bz <= bzm)
                or bx * by * bz > threads or shared > smem or (more and records is None)):
            if packed:
                packed = launch_packed()
            stride = HEADER_SIZE + length
            for at in range(start, start + (1 + more) * stride, stride):
                launch_queued(vg, s, launch_seq(buf, at), t[8:], bytes(buf[at: at + nbytes]))
            if gate is not None:
                until = gate.free_until()  # launch_queued may have called before_launch
            continue
        try:
            if records is not None:
                stride = HEADER_SIZE + length
                pack(rbuf, packed * rsize, f.backend.address, 0 if st is None else int(st),
                     base + start, nbytes, stride, gx, gy, gz, bx, by, bz, shared, 1 + more)
                owners.append((s, start, 1 + more, stride))
                packed += 1
                if packed == cap:
                    packed = launch_packed()
                continue
            if gate is not None and clock() >= until:
                until = before()  # may wait for this VM's turn on the GPU
            if one is not None:
                one(f.backend, gx, gy, gz, bx, by, bz, shared, st, buf, start, nbytes)
            else:
                flat(f.backend, gx, gy, gz, bx, by, bz, shared, st,  # type: ignore[misc]  # `fast`: not None
                     buf[start: start + nbytes])
        except Exception as e:
            launch_failed(vg, s, seq, e)
    if packed:
        launch_packed()
    return n


def launch_again(vg: VGpu, s: Session, seq: int, f: Function, st, shape: tuple, buf: bytearray,
                 start: int, nbytes: int) -> None:
    """One QUEUED LAUNCH that repeats, byte for byte but for its seq and parameter bytes, one that
    `launch_run` checked and launched through `launch_in`, with function `f` and stream `st`
    still those of the session's tables (the caller makes sure: `Channel`): so it passes the same
    checks and goes the same way, the gate first. `shape` is its grid, block and shared memory."""
    gate = vg.gate
    if gate is not None and gate.clock() >= gate.free_until():
        gate.before_launch()  # may wait for this VM's turn on the GPU
    try:
        vg.capabilities.launch_in(f.backend, *shape, st, buf, start, nbytes)  # type: ignore[misc]  # (the caller's has it)
    except Exception as e:
        launch_failed(vg, s, seq, e)


# --- streams and events --------------------------------------------------------------------------

def stream_create(vg, s: Session, r, call):
    _vm_room(vg)
    h = s.new_handle()
    # under a compute gate every stream is blocking, so the meter's null-stream events order after
    # its work (a non-blocking stream's kernels would escape the charge; kvmgpu/compute/meter.py)
    s.streams[h] = vg.backend.stream_create(r.flags if vg.gate is None else 0)
    return (h,), b""


def stream_destroy(vg, s: Session, r, call):
    if s.captures:
        graphs.end_capture(vg, s, r.stream_handle)  # (its graph is dropped)
    del s.streams[r.stream_handle]
    vg.backend.stream_destroy(r.stream)
    return OK


def stream_query(vg, s: Session, r, call):
    if not vg.backend.stream_query(r.stream):
        raise CudaError(CUresult.CUDA_ERROR_NOT_READY)
    return OK


def event_create(vg, s: Session, r, call):
    _vm_room(vg)
    h = s.new_handle()
    s.events[h] = vg.backend.event_create(r.flags)
    return (h,), b""


def event_query(vg, s: Session, r, call):
    if not vg.backend.event_query(r.event):
        raise CudaError(CUresult.CUDA_ERROR_NOT_READY)
    return OK


def event_elapsed(vg, s: Session, r, call):
    return (float(vg.backend.event_elapsed(r.start, r.end)),), b""


def event_destroy(vg, s: Session, r, call):
    del s.events[r.event_handle]
    vg.backend.event_destroy(r.event)
    return OK


def _thin(call, fields: tuple, results: int):
    """The handler of an op that is one backend call (requests.THIN): `call`, bound at setup, with
    the request's `fields`; what it returns is the op's result (several come as a tuple)."""
    get = (lambda r: ()) if not fields else (lambda r, f=fields[0]: (getattr(r, f),)) \
        if len(fields) == 1 else attrgetter(*fields)
    if results == 0:
        def handler(vg, s, r, c):
            call(*get(r))
            return OK
    else:
        def handler(vg, s, r, c):
            out = call(*get(r))
            return ((out,) if results == 1 else tuple(out)), b""
    handler.__name__ = getattr(call, "__name__", "thin")
    return handler


def _unsupported(d: spec.OpDecl, backend: str):
    """The handler of an op the VM's backend does not serve (the specification's `backends`)."""
    def handler(vg, s, r, call):
        raise CudaError(CUresult.CUDA_ERROR_NOT_SUPPORTED,
                        f"{d.cuda} is not supported by the {backend} backend (it serves "
                        f"{', '.join(b for b in spec.BACKENDS if b in d.backends) or 'none'})")
    return handler


def bind(vg: VGpu, ops=spec.OPS) -> dict:
    """Every op's handler for the VM's backend and compute gate, bound once per backend (VGpu calls
    it): a thin call is the backend's method (or, where the op waits for the GPU, the gated one of
    `vg.waits`) with nothing looked up per call; an op the specification says the backend does
    not serve answers CUDA_ERROR_NOT_SUPPORTED naming it."""
    name, table = vg.backend.name, {}
    for d in ops:
        op = Op[d.name]
        if name not in d.backends:
            table[op] = _unsupported(d, name)
        elif op in THIN:
            method, fields, results = THIN[op]
            call = getattr(vg.waits, method, None) or getattr(vg.backend, method)
            table[op] = _thin(call, fields, results)
        else:
            table[op] = HANDLERS[op]
    return table


# The ops that add to or take from a session's tables (dispatch counts what they change).
_HOLDING = frozenset(Op[d.name] for d in spec.OPS if d.holds)

# The handlers written here; the thin calls' are made per backend (`bind`).
HANDLERS = {
    Op.MEM_ALLOC: mem_alloc,
    Op.MEM_FREE: mem_free,
    Op.MEM_GET_INFO: mem_get_info,
    Op.VGPU_PROCESSES: vgpu_processes,
    Op.VGPU_UTILIZATION: vgpu_utilization,
    Op.WINDOW_DEVICE_POINTER: window_device_pointer,
    Op.MEMCPY_HTOD: memcpy_htod,
    Op.MEMCPY_DTOH: memcpy_dtoh,
    Op.MEMCPY_DTOD: memcpy_dtod,
    Op.MEMSET_D8: _memset(1),
    Op.MEMSET_D16: _memset(2),
    Op.MEMCPY_2D: memcpy_2d,
    Op.TENSOR_MAP_ENCODE_TILED: tensor_map_encode_tiled,
    Op.TENSOR_MAP_ENCODE_IM2COL: tensor_map_encode_im2col,
    Op.MEMSET_D32: _memset(4),
    Op.MODULE_LOAD: module_load,
    Op.MODULE_UNLOAD: module_unload,
    Op.MODULE_GET_FUNCTION: module_get_function,
    Op.MODULE_GET_GLOBAL: module_get_global,
    Op.LAUNCH: launch,
    Op.STREAM_CREATE: stream_create,
    Op.STREAM_DESTROY: stream_destroy,
    Op.STREAM_QUERY: stream_query,
    Op.EVENT_CREATE: event_create,
    Op.EVENT_QUERY: event_query,
    Op.EVENT_ELAPSED: event_elapsed,
    Op.EVENT_DESTROY: event_destroy,
    Op.MEMCPY_HTOD_STAGED: memcpy_htod_staged,
    Op.MEMCPY_DTOH_PIECES: memcpy_dtoh_pieces,
    **graphs.HANDLERS,
}
assert not set(HANDLERS) & set(THIN) and set(HANDLERS) | set(THIN) == set(Op) == set(CHECKS), \
    "every op needs a check (or None) and a handler or a thin call"

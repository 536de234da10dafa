"""Op handlers: validate a guest's call against its session's tables, then call the backend.

Every argument is hostile. A handler checks handles, device-pointer ranges, window offsets,
sizes and launch shapes before anything is allocated or touched, and reports a failure by
raising `CudaError`; `dispatch` turns the outcome into a reply, or, for a queued call, keeps the
first failure for the session's next synchronising call.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging

from kvmgpu_guest.cudefs import CUresult
from kvmgpu_guest.protocol import (HEADER_SIZE, LAUNCH_BODY, MAX_ERROR_TEXT, MAX_PIECES, OPS, Call,
                                   Op, launch_seq, pack_params)

from ..backend.base import CudaError
from ..backend.launcher import RECORD
from .session import Function, Session
from .vgpu import VGpu

log = logging.getLogger("kvmgpu.worker")

MAX_HANDLES = 65536  # per table (streams, events, modules, functions) per session
# What the worker keeps for a VM, all its sessions together: allocations, module globals and
# handles (each costs the worker host memory, however little device memory it names).
MAX_OBJECTS = 1 << 20
MIN_PIECE = 64 << 10  # the smallest piece of a MEMCPY_DTOH_PIECES (each piece costs an event wait)
OK = ((), b"")

INVALID_VALUE = CUresult.CUDA_ERROR_INVALID_VALUE
_STREAM_FLAGS = 0x1  # CU_STREAM_NON_BLOCKING
_EVENT_FLAGS = 0x3  # CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING (no interprocess events)


def dispatch(vg: VGpu, s: Session, call: Call):
    """(status, values, blob) for the reply, or None for a queued call."""
    op, spec = call.op, OPS[call.op]
    vg.calls[op] += 1
    if not call.queued and spec.synchronising and s.pending_error is not None:
        return _pending(s)
    held = s.objects if op in _HOLDING else -1
    try:
        if vg.broken is not None:
            raise _unusable(vg)
        values, blob = HANDLERS[op](vg, s, call)
    except Exception as e:
        code, detail = _failed(vg, s, op, e)
    else:
        return None if call.queued else (0, values, blob)
    finally:
        if held >= 0:
            vg.objects += s.objects - held  # what the VM holds, counted (_room)
    if call.queued:
        if s.pending_error is None:
            s.pending_error = (code, f"{op.name} (queued, seq {call.seq}): {detail}")
        return None
    return code, (), f"{op.name}: {detail}".encode()[:MAX_ERROR_TEXT]


def wait(vg: VGpu, s: Session, op: Op, stream: int):
    """STREAM_SYNCHRONIZE or CTX_SYNCHRONIZE as `Connection.take_wait` decodes them (the hot path's
    other half: a launch + synchronise message), with no Call built: what `dispatch` does for
    them, to the same reply. (status, values, blob)."""
    vg.calls[op] += 1
    if s.pending_error is not None:
        return _pending(s)
    try:
        if vg.broken is not None:
            raise _unusable(vg)
        if op is _STREAM_SYNCHRONIZE:
            vg.backend.stream_synchronize(s.stream(stream))
        else:
            vg.backend.synchronize()
    except Exception as e:
        code, detail = _failed(vg, s, op, e)
        return code, (), f"{op.name}: {detail}".encode()[:MAX_ERROR_TEXT]
    return _WAITED


_STREAM_SYNCHRONIZE = Op.STREAM_SYNCHRONIZE
_WAITED = (0, (), b"")


def _unusable(vg: VGpu) -> CudaError:
    """The error of every call after a sticky one broke the context (`vg.broken`)."""
    code, why = vg.broken
    return CudaError(code, f"the context is unusable after: {why}")


def _pending(s: Session):
    """The reply of a synchronising call that reports a queued call's error (once)."""
    code, text = s.pending_error
    s.pending_error = None
    return code, (), text.encode()[:MAX_ERROR_TEXT]


def _failed(vg: VGpu, s: Session, op: Op, e: Exception) -> tuple[int, str]:
    """A call's failure, counted and noted (a sticky error breaks the context): (code, detail)."""
    if isinstance(e, CudaError):
        code, detail = e.code, e.detail or str(e)
    else:  # a bug here or in the backend: the guest gets an error, we go on
        log.error("%s on session %s:%s failed unexpectedly", op.name, *s.key, exc_info=e)
        code, detail = CUresult.CUDA_ERROR_UNKNOWN, f"internal error: {type(e).__name__}"
    vg.errors[op] += 1
    vg.note_error(code, detail)
    return code, detail


def _invalid(detail: str):
    raise CudaError(INVALID_VALUE, detail)


def _room(vg: VGpu, table: dict | None, what: str) -> None:
    """OUT_OF_MEMORY where `table` (of a session) is full, or the VM holds MAX_OBJECTS."""
    if table is not None and len(table) >= MAX_HANDLES:
        raise CudaError(CUresult.CUDA_ERROR_OUT_OF_MEMORY, f"more than {MAX_HANDLES} {what} in one session")
    if vg.objects >= MAX_OBJECTS:
        raise CudaError(CUresult.CUDA_ERROR_OUT_OF_MEMORY,
                        f"the VM holds {MAX_OBJECTS} allocations and handles, the most a worker keeps")


def _over_quota(vg: VGpu, nbytes: int, what: str) -> CudaError:
    return CudaError(CUresult.CUDA_ERROR_OUT_OF_MEMORY,
                     f"{what} would take {nbytes} bytes, more than the vGPU's quota has left "
                     f"({vg.quota.used} of {vg.quota.limit} bytes in use)")


# --- context -------------------------------------------------------------------------------------

def ctx_synchronize(vg, s, call):
    vg.backend.synchronize()
    return OK


def fence(vg, s, call):
    # The guest reuses its staging ring after this: no queued copy may still read or write it.
    vg.backend.synchronize()
    return OK


# --- memory --------------------------------------------------------------------------------------

def mem_alloc(vg: VGpu, s: Session, call):
    (nbytes,) = call.args
    if nbytes == 0:
        _invalid("cannot allocate 0 bytes")
    _room(vg, None, "allocations")
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


def mem_free(vg, s: Session, call):
    (ptr,) = call.args
    if ptr == 0:
        return OK
    r = s.ranges.get(ptr)
    if r is None or r.digest is not None:
        _invalid(f"0x{ptr:x} is not the start of an allocation of this session")
    vg.backend.mem_free(ptr)
    s.drop_range(ptr)
    vg.quota.release(r.charge)
    return OK


def mem_get_info(vg, s, call):
    return (vg.quota.free, vg.quota.limit), b""


def memcpy_htod(vg, s: Session, call):
    dst, offset, nbytes, stream = call.args
    st = s.stream(stream)
    if nbytes == 0:
        return OK
    s.check_range(dst, nbytes, "destination")
    host = s.check_window(offset, nbytes)
    vg.backend.memcpy_htod(dst, host, nbytes, st, not call.queued)
    vg.bytes["htod"] += nbytes
    return OK


def memcpy_htod_staged(vg, s: Session, call):
    """cuMemcpyHtoD that the guest did not wait for: copied now and waited for (in null-stream
    order, as natively), then the call's seq goes to the u32 at window offset `done`: the guest
    refills its staging bytes once it reads there a seq at or past the one it sent. Only this
    worker writes there; what the guest writes there misleads only the guest itself."""
    dst, offset, nbytes, done = call.args
    if done % 4:
        _invalid(f"done offset {done} is not 4-aligned")
    at = s.check_window(done, 4)
    try:
        if nbytes:
            s.check_range(dst, nbytes, "destination")
            host = s.check_window(offset, nbytes)
            vg.backend.memcpy_htod(dst, host, nbytes, None, True)
            vg.bytes["htod"] += nbytes
    finally:
        vg.region.view[at: at + 4].cast("I")[0] = call.seq  # one aligned store: never torn
    return OK


def memcpy_dtoh(vg, s: Session, call):
    offset, src, nbytes, stream = call.args
    st = s.stream(stream)
    if nbytes == 0:
        return OK
    host = s.check_window(offset, nbytes)
    s.check_range(src, nbytes, "source")
    vg.backend.memcpy_dtoh(host, src, nbytes, st)
    vg.bytes["dtoh"] += nbytes
    return OK


def memcpy_dtoh_pieces(vg, s: Session, call):
    """cuMemcpyDtoH whose pieces the guest copies out as they land: after each piece the bytes
    landed so far go to the u32 at window offset `landed`. The pieces are at least MIN_PIECE and
    at most MAX_PIECES (a smaller `piece` is made bigger). What the guest writes at `landed`
    misleads only the guest itself."""
    offset, src, nbytes, stream, piece, landed = call.args
    st = s.stream(stream)
    if nbytes == 0:
        return OK
    if nbytes > 0xFFFFFFFF:
        _invalid(f"{nbytes} bytes is more than a u32 count of landed bytes can say: use MEMCPY_DTOH")
    if landed % 4:
        _invalid(f"landed offset {landed} is not 4-aligned")
    at = s.check_window(landed, 4)
    word = vg.region.view[at: at + 4].cast("I")
    host = s.check_window(offset, nbytes)
    s.check_range(src, nbytes, "source")
    piece = max(piece, MIN_PIECE, -(-nbytes // MAX_PIECES))

    def tell(n: int) -> None:
        word[0] = n  # one aligned store: never torn

    vg.backend.memcpy_dtoh(host, src, nbytes, st, piece, tell)
    vg.bytes["dtoh"] += nbytes
    return OK


def memcpy_dtod(vg, s: Session, call):
    dst, src, nbytes, stream = call.args
    st = s.stream(stream)
    if nbytes == 0:
        return OK
    s.check_range(dst, nbytes, "destination")
    s.check_range(src, nbytes, "source")
    vg.backend.memcpy_dtod(dst, src, nbytes, st, not call.queued)
    vg.bytes["dtod"] += nbytes
    return OK


def _memset(width: int):
    limit = 0xFF if width == 1 else 0xFFFFFFFF

    def memset(vg, s: Session, call):
        dst, value, count, stream = call.args
        st = s.stream(stream)
        if value > limit:
            _invalid(f"value {value} does not fit in {width} byte(s)")
        if count == 0:
            return OK
        s.check_range(dst, count * width, "destination")
        vg.backend.memset(dst, value, count, width, st, not call.queued)
        return OK
    return memset


# --- modules -------------------------------------------------------------------------------------

def module_load(vg: VGpu, s: Session, call):
    offset, nbytes = call.args
    digest = call.blob
    if len(digest) != 32:
        _invalid("the blob must be the image's 32-byte sha256")
    _room(vg, s.modules, "modules")
    module = vg.modules.acquire(digest)
    if module is None:
        if nbytes == 0:
            raise CudaError(CUresult.CUDA_ERROR_NOT_FOUND, "the host does not have this image; send it")
        start = s.check_window(offset, nbytes)
        image = bytes(vg.region.view[start: start + nbytes])  # a copy the guest cannot change
        if hashlib.sha256(image).digest() != digest:
            _invalid("the image in the window does not match its sha256")
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


def module_unload(vg: VGpu, s: Session, call):
    (handle,) = call.args
    digest = s.module(handle)
    del s.modules[handle]
    for fh in [fh for fh, f in s.functions.items() if f.module == handle]:
        del s.functions[fh]
    if digest not in s.modules.values():
        for ptr in [p for p, r in s.ranges.items() if r.digest == digest]:
            s.drop_range(ptr)
    vg.modules.release(digest)
    return OK


def _name(blob: bytes) -> str:
    try:
        name = blob.decode("utf-8")
    except UnicodeDecodeError:
        _invalid("the name is not UTF-8")
    if not name or "\0" in name:
        _invalid("the name is empty or holds a NUL")
    return name


def module_get_function(vg: VGpu, s: Session, call):
    (handle,) = call.args
    digest = s.module(handle)
    name = _name(call.blob)
    _room(vg, s.functions, "functions")
    fn, layout = vg.backend.module_get_function(vg.modules.get(digest), name)
    layout = [(int(o), int(z)) for o, z in layout]
    arg_bytes = max((o + z for o, z in layout), default=0)
    fh = s.new_handle()
    s.functions[fh] = Function(handle, fn, layout, arg_bytes)
    return (fh, len(layout)), pack_params(layout)


def module_get_global(vg: VGpu, s: Session, call):
    (handle,) = call.args
    digest = s.module(handle)
    name = _name(call.blob)
    ptr, size = vg.backend.module_get_global(vg.modules.get(digest), name)
    if size > 0 and ptr not in s.ranges:
        _room(vg, None, "globals")
        s.add_range(ptr, size, digest)
    return (ptr, size), b""


# --- launches ------------------------------------------------------------------------------------

def _launch_limits(vg: VGpu) -> tuple:
    """The device's launch limits, read once per device info (a new context keeps the GPU)."""
    cached = getattr(vg, "_launch_limits", None)
    if cached is not None and cached[0] is vg.info:
        return cached[1]
    a = vg.attribute
    limits = (a(5, 2147483647), a(6, 65535), a(7, 65535), a(2, 1024), a(3, 1024), a(4, 64),
              a(1, 1024), a(8, 49152))
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
            if not 1 <= value <= top:
                _invalid(f"{dim} is {value}, must be 1..{top}")
    if bx * by * bz > threads:
        _invalid(f"block of {bx * by * bz} threads, more than {threads}")
    if shared > smem:
        _invalid(f"{shared} bytes of dynamic shared memory, more than {smem}")
    if len(blob) != fn.arg_bytes:
        _invalid(f"{len(blob)} bytes of arguments, the function takes {fn.arg_bytes}")
    return fn.backend, st


def launch(vg: VGpu, s: Session, call):
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
            raise _unusable(vg)
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
        _queued_launch_failed(vg, s, seq, e)


def _queued_launch_failed(vg: VGpu, s: Session, seq: int, e: Exception) -> None:
    """Keep a queued launch's failure for the session's next synchronising call (as `dispatch`)."""
    code, detail = _failed(vg, s, Op.LAUNCH, e)
    if s.pending_error is None:
        s.pending_error = (code, f"LAUNCH (queued, seq {seq}): {detail}")


def launch_run(vg: VGpu, cid: int, launches: list, buf: bytearray) -> int:
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
    backend = vg.backend
    records = backend.launch_records if len(launches) > 1 or launches[0][2] else None
    one = backend.launch_in if records is None else None
    flat = backend.launch_flat
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
            in `_queued_launch_failed`, and those after it go on (or fail, if the context broke)."""
            nonlocal until
            if gate is not None and clock() >= until:
                until = before()  # may wait for this VM's turn on the GPU
            first, skip = 0, 0
            while first < packed:
                first, skip, err = records.launch(first, packed - first, skip)
                if not err:
                    break
                s_, start_, count_, stride_ = owners[first]
                _queued_launch_failed(vg, s_, launch_seq(buf, start_ + skip * stride_),
                                      CudaError(err, "cuLaunchKernel"))
                skip += 1
                if vg.broken is not None:
                    for s_, start_, count_, stride_ in owners[first:packed]:
                        for j in range(skip, count_):
                            _queued_launch_failed(vg, s_, launch_seq(buf, start_ + j * stride_),
                                                  _unusable(vg))
                        skip = 0
                    break
            owners.clear()
            return 0

    gxm, gym, gzm, bxm, bym, bzm, threads, smem = _launch_limits(vg)
    last_sid, s, functions, streams = None, None, None, None
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
                flat(f.backend, gx, gy, gz, bx, by, bz, shared, st, buf[start: start + nbytes])
        except Exception as e:
            _queued_launch_failed(vg, s, seq, e)
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
        vg.backend.launch_in(f.backend, *shape, st, buf, start, nbytes)
    except Exception as e:
        _queued_launch_failed(vg, s, seq, e)


# --- streams and events --------------------------------------------------------------------------

def stream_create(vg, s: Session, call):
    (flags,) = call.args
    if flags & ~_STREAM_FLAGS:
        _invalid(f"stream flags 0x{flags:x}")
    _room(vg, s.streams, "streams")
    h = s.new_handle()
    s.streams[h] = vg.backend.stream_create(flags)
    return (h,), b""


def stream_destroy(vg, s: Session, call):
    (h,) = call.args
    if h == 0:
        raise CudaError(CUresult.CUDA_ERROR_INVALID_HANDLE, "the null stream cannot be destroyed")
    st = s.stream(h)
    del s.streams[h]
    vg.backend.stream_destroy(st)
    return OK


def stream_synchronize(vg, s: Session, call):
    vg.backend.stream_synchronize(s.stream(call.args[0]))
    return OK


def stream_query(vg, s: Session, call):
    if not vg.backend.stream_query(s.stream(call.args[0])):
        raise CudaError(CUresult.CUDA_ERROR_NOT_READY)
    return OK


def event_create(vg, s: Session, call):
    (flags,) = call.args
    if flags & ~_EVENT_FLAGS:
        _invalid(f"event flags 0x{flags:x}")
    _room(vg, s.events, "events")
    h = s.new_handle()
    s.events[h] = vg.backend.event_create(flags)
    return (h,), b""


def event_record(vg, s: Session, call):
    ev, stream = call.args
    vg.backend.event_record(s.event(ev), s.stream(stream))
    return OK


def event_synchronize(vg, s: Session, call):
    vg.backend.event_synchronize(s.event(call.args[0]))
    return OK


def event_query(vg, s: Session, call):
    if not vg.backend.event_query(s.event(call.args[0])):
        raise CudaError(CUresult.CUDA_ERROR_NOT_READY)
    return OK


def event_elapsed(vg, s: Session, call):
    start, end = call.args
    return (float(vg.backend.event_elapsed(s.event(start), s.event(end))),), b""


def event_destroy(vg, s: Session, call):
    (h,) = call.args
    ev = s.event(h)
    del s.events[h]
    vg.backend.event_destroy(ev)
    return OK


# The ops that add to or take from a session's tables (dispatch counts what they change).
_HOLDING = frozenset({Op.MEM_ALLOC, Op.MEM_FREE, Op.MODULE_LOAD, Op.MODULE_UNLOAD,
                      Op.MODULE_GET_FUNCTION, Op.MODULE_GET_GLOBAL, Op.STREAM_CREATE,
                      Op.STREAM_DESTROY, Op.EVENT_CREATE, Op.EVENT_DESTROY})

HANDLERS = {
    Op.CTX_SYNCHRONIZE: ctx_synchronize,
    Op.MEM_ALLOC: mem_alloc,
    Op.MEM_FREE: mem_free,
    Op.MEM_GET_INFO: mem_get_info,
    Op.MEMCPY_HTOD: memcpy_htod,
    Op.MEMCPY_DTOH: memcpy_dtoh,
    Op.MEMCPY_DTOD: memcpy_dtod,
    Op.MEMSET_D8: _memset(1),
    Op.MEMSET_D32: _memset(4),
    Op.MODULE_LOAD: module_load,
    Op.MODULE_UNLOAD: module_unload,
    Op.MODULE_GET_FUNCTION: module_get_function,
    Op.MODULE_GET_GLOBAL: module_get_global,
    Op.LAUNCH: launch,
    Op.STREAM_CREATE: stream_create,
    Op.STREAM_DESTROY: stream_destroy,
    Op.STREAM_SYNCHRONIZE: stream_synchronize,
    Op.STREAM_QUERY: stream_query,
    Op.EVENT_CREATE: event_create,
    Op.EVENT_RECORD: event_record,
    Op.EVENT_SYNCHRONIZE: event_synchronize,
    Op.EVENT_QUERY: event_query,
    Op.EVENT_ELAPSED: event_elapsed,
    Op.EVENT_DESTROY: event_destroy,
    Op.FENCE: fence,
    Op.MEMCPY_HTOD_STAGED: memcpy_htod_staged,
    Op.MEMCPY_DTOH_PIECES: memcpy_dtoh_pieces,
}
assert set(HANDLERS) == set(Op), "every op needs a handler"

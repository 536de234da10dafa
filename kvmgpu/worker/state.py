"""The rules of a session's calls, in one place: what may be queued, what synchronises, how a
queued call's failure is held and reported, and what a failure does to the VM's context.

- **Queued.** A call of an op the specification says `queueable` may come QUEUED: no reply is
  sent. The guest chooses; the wire decoder refuses a QUEUED frame of any other op (a protocol
  violation: the channel closes). A call on no session is dropped when queued, else answered
  CUDA_ERROR_INVALID_CONTEXT (channel.py).
- **Held.** When a queued call fails, its failure is *held* for its session (`hold`): the first
  one only, with the op and the call's seq; later failures are counted, not reported, as CUDA
  reports the first asynchronous error.
- **Reported.** A call of an op the specification says `synchronising` (`REPORTS`), sent to be
  answered, reports the held failure instead of running (`report`), once: the held failure is
  then gone. Every synchronise takes this rule, whichever way it came (dispatch.dispatch, and
  dispatch.wait for the launch + synchronise fast path).
- **Failed.** Every failure is counted per op (`failed`); a sticky CUDA error (vgpu.STICKY)
  breaks the VM's context: every later call fails with `unusable` until the VM's sessions end
  and the worker takes a fresh context. An exception that is not a CudaError is a bug: logged
  with its traceback, answered CUDA_ERROR_UNKNOWN.

The session's held failure is `Session.pending_error`; nothing else writes it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kvmgpu_wire import spec
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import MAX_ERROR_TEXT, Op

from ..backend.base import CudaError
from .session import Session


class ImageMiss(CudaError):
    """MODULE_LOAD's "does the host have this image?" answered no: the guest sends it next. Not a
    failure, so not counted in the errors (a count of its own in the stats)."""

if TYPE_CHECKING:
    from .vgpu import VGpu

log = logging.getLogger("kvmgpu.worker")

# The ops that report a held failure when sent to be answered.
REPORTS = frozenset(Op[d.name] for d in spec.OPS if d.synchronising)


def hold(s: Session, op: Op, seq: int, code: int, detail: str) -> None:
    """A queued call failed: keep its failure for the session's next synchronising call, unless
    one is held already."""
    if s.pending_error is None:
        s.pending_error = (code, f"{op.name} (queued, seq {seq}): {detail}")


def report(s: Session) -> tuple:
    """The reply of a synchronising call that reports the held failure (which is then gone):
    (status, values, blob)."""
    assert s.pending_error is not None  # (called when one is held)
    code, text = s.pending_error
    s.pending_error = None
    return code, (), text.encode()[:MAX_ERROR_TEXT]


def error_reply(op: Op, code: int, detail: str) -> tuple:
    """The reply of a call that failed: (status, values, blob), the blob naming the op."""
    return code, (), f"{op.name}: {detail}".encode()[:MAX_ERROR_TEXT]


def failed(vg: VGpu, s: Session, op: Op, e: Exception) -> tuple[int, str]:
    """A call's failure, counted and noted (a sticky error breaks the context): (code, detail)."""
    if isinstance(e, CudaError):
        code, detail = e.code, e.detail or str(e)
    else:  # a bug here or in the backend: the guest gets an error, we go on
        log.error("%s on session %s:%s failed unexpectedly", op.name, *s.key, exc_info=e)
        code, detail = CUresult.CUDA_ERROR_UNKNOWN, f"internal error: {type(e).__name__}"
    if isinstance(e, ImageMiss):  # the guest's question, answered: not a failure
        vg.image_misses += 1
        return code, detail
    vg.errors[op] += 1
    vg.note_error(code, detail)
    return code, detail


def unusable(vg: VGpu) -> CudaError:
    """The error of every call after a sticky one broke the context (`vg.broken`)."""
    assert vg.broken is not None  # (called when it is)
    code, why = vg.broken
    return CudaError(code, f"the context is unusable after: {why}")

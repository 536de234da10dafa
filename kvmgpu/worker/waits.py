"""The backend calls in which the worker waits for the GPU, and the compute gate around them: both
from the op specification (guest-agent/kvmgpu_wire/spec.py).

Every op the specification says waits for the GPU (`waits_gpu`) names the backend call it waits
in: its thin call (`backend=`) or `waits_in=`. `WAITS` is what those declarations say of each
such call: what it waits for, read from its parameters' names: with a `stream` the null stream
(when it is None) or a part of the VM's work (another stream), with an `event` a part, with
neither the whole context; with a `sync` it waits only when that is true.

`GpuWaits` holds those calls of one backend as the worker makes them. Without a compute gate they
are the backend's own bound methods (nothing in between). With a gate each one tells the gate
before it waits (`synchronizing`: an event-timed run ends there, and the GPU's idle time until the
guest's next launch is not charged) and after, whether it returned or failed, with what it waited
for (`synchronized(what)`: a clock-timed run ends there; kvmgpu/compute/meter.py). The backend
itself is not changed: the meter's own calls on it (the drain at a slice's end) are not metered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from kvmgpu_wire import spec
from kvmgpu_wire.trace import ON as _TRACE, mark as _mark

from ..compute.meter import CONTEXT, NULL_STREAM, PART


def _waits(ops) -> dict[str, tuple[int | None, int | None, str]]:
    """method -> (its `stream` parameter's index or None, its `sync` parameter's or None, what it
    waits for when it has no stream: CONTEXT or PART)."""
    found: dict[str, tuple] = {}
    for d in ops:
        call = d.wait_call
        if call is None:
            continue
        method, params = call
        stream = params.index("stream") if "stream" in params else None
        sync = params.index("sync") if "sync" in params else None
        what = PART if "event" in params else CONTEXT
        if found.setdefault(method, (stream, sync, what)) != (stream, sync, what):
            raise ValueError(f"{d.name}: {method} is declared with other parameters by another op")
    return found


WAITS = _waits(spec.OPS)


class GpuWaits:
    """The calls of `WAITS` on `backend`, each an attribute of the method's name; wrapped for
    `gate` (a kvmgpu.compute.ComputeGate, or None: the backend's own methods)."""

    def __init__(self, backend, gate=None, waits=None):
        for method, (stream, sync, what) in (WAITS if waits is None else waits).items():
            call = getattr(backend, method)
            setattr(self, method, call if gate is None else _gated(gate, call, stream, sync, what))

    if TYPE_CHECKING:  # the calls are attributes set above, one per WAITS entry
        def __getattr__(self, method: str) -> Callable[..., Any]: ...


def _gated(gate, call, stream: int | None, sync: int | None, what: str):
    """`call`, telling `gate` before it waits for the GPU and after, with what it waited for."""
    before, after = gate.synchronizing, gate.synchronized

    def wrapped(*args):
        if sync is not None and not args[sync]:
            return call(*args)  # queued: the GPU keeps going, nothing waits
        w = what if stream is None else NULL_STREAM if args[stream] is None else PART
        before()
        if _TRACE:
            _mark("w3")
        try:
            return call(*args)
        finally:
            after(w)
    wrapped.__name__ = getattr(call, "__name__", "wait")
    return wrapped

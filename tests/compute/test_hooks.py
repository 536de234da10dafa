"""A gated VGpu: the backend calls the op specification says wait for the GPU (kvmgpu/worker/waits.py)
tell the gate before and after they wait, and what they waited for, as the worker makes them
(`vgpu.waits`); the backend itself is not changed; guest streams are made blocking."""

import pytest

from kvmgpu.backend.base import CudaError
from kvmgpu.backend.sim import SimBackend
from kvmgpu.compute.meter import CONTEXT, NULL_STREAM, PART
from kvmgpu.worker import VGpu
from kvmgpu.worker.waits import WAITS
from kvmgpu_wire.region import Region


class RecordingGate:
    gpu_seconds = 0.0
    held = False

    def __init__(self):
        self.notes = 0
        self.waits = []

    def synchronizing(self):
        self.notes += 1

    def synchronized(self, what):
        self.waits.append(what)

    def before_launch(self):
        pass

    def idle(self):
        pass

    def close(self):
        pass


@pytest.fixture
def vgpu(tmp_path):
    region = Region.open_file(str(tmp_path / "region"), 1 << 20, create=True)
    created = []

    def backend():
        b = SimBackend(total_memory=16 << 20)
        created.append(b)
        return b
    v = VGpu(backend, 16 << 20, region)
    v.created = created
    yield v
    v.close()
    region.close()


def test_the_gated_calls_are_the_ones_the_specification_says_wait():
    """Each op with `waits_gpu` names its call; what each waits for comes from its parameters."""
    assert WAITS == {"synchronize": (None, None, CONTEXT), "stream_synchronize": (0, None, CONTEXT),
                     "event_synchronize": (None, None, PART),
                     "memcpy_htod": (3, 4, CONTEXT), "memcpy_dtoh": (3, None, CONTEXT),
                     "memcpy_dtod": (3, 4, CONTEXT), "memset": (4, 5, CONTEXT),
                     "memcpy_2d": (6, 7, CONTEXT)}


def test_waiting_calls_end_the_run(vgpu):
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    b, w = vgpu.backend, vgpu.waits
    p = b.mem_alloc(64)
    w.synchronize()
    w.stream_synchronize(None)
    w.memcpy_dtoh(0, p, 16, None)
    w.memcpy_htod(p, 0, 16, None, False)  # queued: the GPU keeps going, no wait
    w.memcpy_htod(p, 0, 16, None, True)
    w.memset(p, 0, 4, 1, None, True)
    s = b.stream_create(0)
    w.stream_synchronize(s)
    w.memcpy_dtoh(0, p, 16, s)
    e = b.event_create(0)
    w.event_synchronize(e)
    assert gate.notes == 8
    assert gate.waits == [CONTEXT, NULL_STREAM, NULL_STREAM, NULL_STREAM, NULL_STREAM, PART, PART, PART]
    vgpu.attach_gate(gate)  # attached twice: still one gate around each call
    vgpu.waits.synchronize()
    assert gate.notes == 9 and gate.waits[-1] == CONTEXT


def test_the_backend_itself_is_not_changed(vgpu):
    """The gate is around the worker's calls, not in the backend: the meter's own calls on the
    backend (its drain at a slice's end) are not metered again, and nothing is replaced on it."""
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    assert not set(vars(vgpu.backend)) & set(WAITS)
    vgpu.backend.synchronize()
    assert gate.notes == 0 and gate.waits == []
    assert vgpu.waits.synchronize is not vgpu.backend.synchronize


def test_without_a_gate_the_calls_are_the_backend_s_own(vgpu):
    for method in WAITS:
        assert getattr(vgpu.waits, method) == getattr(vgpu.backend, method)


def test_a_failed_wait_still_says_it_returned(vgpu):
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    vgpu.backend._sticky = CudaError(700, "an earlier kernel faulted")  # every call fails now
    with pytest.raises(CudaError):
        vgpu.waits.synchronize()
    assert gate.notes == 1 and gate.waits == [CONTEXT]


def test_ops_that_wait_are_gated_through_dispatch(vgpu):
    """The ops, as a guest sends them: a synchronise and a synchronous copy tell the gate; a
    queued copy does not."""
    from kvmgpu.worker.dispatch import dispatch
    from kvmgpu_wire.protocol import Call, Op
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    s = vgpu.open_session((1, 1), 64 << 10)
    assert dispatch(vgpu, s, Call(1, 1, Op.CTX_SYNCHRONIZE, (), b"", False))[0] == 0
    ptr = dispatch(vgpu, s, Call(1, 2, Op.MEM_ALLOC, (64,), b"", False))[1][0]
    assert dispatch(vgpu, s, Call(1, 3, Op.MEMCPY_HTOD, (ptr, 0, 64, 0), b"", True)) is None
    assert dispatch(vgpu, s, Call(1, 4, Op.MEMCPY_HTOD, (ptr, 0, 64, 0), b"", False))[0] == 0
    assert dispatch(vgpu, s, Call(1, 5, Op.STREAM_SYNCHRONIZE, (0,), b"", False))[0] == 0
    assert gate.waits == [CONTEXT, NULL_STREAM, NULL_STREAM]


def test_streams_are_blocking_under_a_gate(vgpu, monkeypatch):
    from kvmgpu.worker.dispatch import dispatch
    from kvmgpu_wire.protocol import Call, Op
    flags = []
    real = SimBackend.stream_create
    monkeypatch.setattr(SimBackend, "stream_create", lambda self, f: (flags.append(f), real(self, f))[1])
    s = vgpu.open_session((1, 1), 64 << 10)
    dispatch(vgpu, s, Call(1, 1, Op.STREAM_CREATE, (1,), b"", False))
    vgpu.attach_gate(RecordingGate())
    dispatch(vgpu, s, Call(1, 2, Op.STREAM_CREATE, (1,), b"", False))  # NON_BLOCKING asked, blocking made
    assert flags == [1, 0]


def test_a_new_backend_is_gated_again(vgpu):
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    vgpu.broken = (700, "test")
    vgpu.restart_backend()
    assert len(vgpu.created) == 2 and vgpu.backend is vgpu.created[1]
    vgpu.waits.synchronize()
    assert gate.notes == 1

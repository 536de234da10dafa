"""A gated VGpu: the backend's waiting calls tell the gate before and after they wait, and what
they waited for; guest streams are made blocking."""

import pytest

from kvmgpu_wire.region import Region

from kvmgpu.backend.base import CudaError
from kvmgpu.backend.sim import SimBackend
from kvmgpu.compute.meter import CONTEXT, NULL_STREAM, PART
from kvmgpu.worker import VGpu


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


def test_waiting_calls_end_the_run(vgpu):
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    b = vgpu.backend
    p = b.mem_alloc(64)
    b.synchronize()
    b.stream_synchronize(None)
    b.memcpy_dtoh(0, p, 16, None)
    b.memcpy_htod(p, 0, 16, None, False)  # queued: the GPU keeps going, no wait
    b.memcpy_htod(p, 0, 16, None, True)
    b.memset(p, 0, 4, 1, None, True)
    s = b.stream_create(0)
    b.stream_synchronize(s)
    b.memcpy_dtoh(0, p, 16, s)
    e = b.event_create(0)
    b.event_synchronize(e)
    assert gate.notes == 8
    assert gate.waits == [CONTEXT, NULL_STREAM, NULL_STREAM, NULL_STREAM, NULL_STREAM, PART, PART, PART]
    vgpu.attach_gate(gate)  # hooking twice wraps once
    b.synchronize()
    assert gate.notes == 9 and gate.waits[-1] == CONTEXT


def test_a_failed_wait_still_says_it_returned(vgpu):
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    vgpu.backend._sticky = CudaError(700, "an earlier kernel faulted")  # every call fails now
    with pytest.raises(CudaError):
        vgpu.backend.synchronize()
    assert gate.notes == 1 and gate.waits == [CONTEXT]


def test_streams_are_blocking_under_a_gate(vgpu, monkeypatch):
    flags = []
    real = SimBackend.stream_create
    monkeypatch.setattr(SimBackend, "stream_create", lambda self, f: (flags.append(f), real(self, f))[1])
    vgpu.backend.stream_create(1)
    vgpu.attach_gate(RecordingGate())
    vgpu.backend.stream_create(1)  # CU_STREAM_NON_BLOCKING asked for, blocking made
    assert flags == [1, 0]


def test_a_new_backend_is_hooked_again(vgpu):
    gate = RecordingGate()
    vgpu.attach_gate(gate)
    vgpu.broken = (700, "test")
    vgpu.restart_backend()
    assert len(vgpu.created) == 2 and vgpu.backend is vgpu.created[1]
    vgpu.backend.synchronize()
    assert gate.notes == 1

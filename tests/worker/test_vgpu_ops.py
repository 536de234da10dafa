"""The ops the guest's NVML asks (VGPU_PROCESSES, VGPU_UTILIZATION), through dispatch as a guest's
calls reach them: the process list is the VM's CUDA sessions by the pid their HELLO gave, with the
memory each holds, monitors left out; monitors get no window, so a full region never keeps them
out; utilisation is the compute gate's GPU time over the last second."""

import struct

import pytest

from kvmgpu.backend.sim import SimBackend
from kvmgpu.worker import VGpu
from kvmgpu.worker.dispatch import dispatch
from kvmgpu.worker.session import Session
from kvmgpu_wire.ops import MAX_PROCESSES, PROCESS_FORMAT
from kvmgpu_wire.protocol import Call, Op
from kvmgpu_wire.region import Region

MiB = 1 << 20


@pytest.fixture
def vgpu(tmp_path):
    region = Region.open_file(str(tmp_path / "region"), MiB, create=True)
    v = VGpu(lambda: SimBackend(total_memory=64 * MiB), 64 * MiB, region)
    yield v
    v.close()
    region.close()


def call(vgpu, session, op, *args):
    status, values, blob = dispatch(vgpu, session, Call(session.key[1], 1, op, args, b"", False))
    assert status == 0, blob
    return values, blob


def processes(vgpu, session):
    (count,), blob = call(vgpu, session, Op.VGPU_PROCESSES)
    return list(struct.iter_unpack(PROCESS_FORMAT, blob))[:count]


def test_the_process_list_is_the_vms_cuda_sessions_by_pid(vgpu):
    a1 = vgpu.open_session((1, 1), 64 << 10, pid=4242)
    a2 = vgpu.open_session((1, 2), 64 << 10, pid=4242)  # one process, two sessions (Python and C)
    b = vgpu.open_session((2, 1), 64 << 10, pid=77)
    monitor = vgpu.open_session((3, 1), 0, pid=4242, role="monitor")
    call(vgpu, a1, Op.MEM_ALLOC, 4 * MiB)
    call(vgpu, a2, Op.MEM_ALLOC, 2 * MiB)
    assert processes(vgpu, monitor) == [(77, 1, 0), (4242, 2, 6 * MiB)]
    vgpu.end_session(b.key)
    assert processes(vgpu, monitor) == [(4242, 2, 6 * MiB)]


def test_a_monitor_gets_no_window_and_a_full_region_does_not_keep_it_out(vgpu):
    vgpu.open_session((1, 1), 0, pid=1)  # all the region
    assert isinstance(vgpu.open_session((1, 2), 0, pid=2), str)  # no room for another CUDA session
    monitor = vgpu.open_session((2, 1), 0, pid=3, role="monitor")
    assert monitor.window.size == 0
    status, _, text = dispatch(vgpu, monitor, Call(1, 1, Op.MEMCPY_DTOH, (0, 0, 16, 0), b"", False))
    assert status != 0  # nothing to copy into
    vgpu.end_session(monitor.key)
    assert isinstance(vgpu.open_session((1, 3), 0, pid=2), str)  # its end gave back nothing it did not hold


def test_an_unknown_role_is_refused_naming_the_roles(vgpu):
    why = vgpu.open_session((1, 1), 0, role="root")
    assert isinstance(why, str) and "'monitor'" in why and not vgpu.sessions


def test_the_list_is_cut_to_what_a_reply_carries(vgpu):
    monitor = vgpu.open_session((1, 1), 0, role="monitor")
    for i in range(MAX_PROCESSES + 1):  # more processes than a reply carries (no windows needed here)
        vgpu.sessions[(2, i)] = Session((2, i), monitor.window, pid=i + 1)
    assert len(processes(vgpu, monitor)) == MAX_PROCESSES


class Gate:
    gpu_seconds = 0.0

    def close(self):
        pass


def test_utilisation_is_the_gates_gpu_time_over_the_last_second(vgpu):
    clock = [10.0]
    vgpu.usage._clock = lambda: clock[0]
    vgpu.usage._samples.clear()
    vgpu.usage._samples.append((10.0, 0.0))
    monitor = vgpu.open_session((1, 1), 0, role="monitor")
    clock[0] = 11.0
    assert call(vgpu, monitor, Op.VGPU_UTILIZATION)[0] == (0, 0, 1000)  # no gate: the sim backend's worker
    gate = Gate()
    vgpu.gate = gate
    clock[0] = 12.0
    gate.gpu_seconds = 0.25
    assert call(vgpu, monitor, Op.VGPU_UTILIZATION)[0] == (25, 0, 1000)  # memory: not measured

"""The plain protocol client (kvmgpu_guest.client.Session: `kvmgpu-guest info`'s, the tests' and the
fuzz corpus's) against a fake host over a socketpair: calls, queued calls and their deferred
errors, copies through the window's ring."""

import os
import socket
import tempfile

import pytest

from kvmgpu_guest.channel import UnixTransport
from kvmgpu_guest.client import Session
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.mailbox import MAILBOX_BYTES
from kvmgpu_wire.protocol import LocalProtocolError, Op
from kvmgpu_wire.region import Region

from fakehost import DEVICE, FakeHost

WINDOW = (4096, 64 * 1024)


@pytest.fixture
def pair():
    """A session and a fake host."""
    fd, path = tempfile.mkstemp(prefix="kvmgpu-fake-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.close(fd)
    guest_region = Region.open_file(path, 1 << 20, create=True)
    host_region = Region.open_file(path)
    a, b = socket.socketpair()
    host = FakeHost(b, host_region, WINDOW)
    host.start()
    session = Session(UnixTransport("socketpair", a), guest_region, session_id=3)
    session.handshake()
    yield session, host
    session.close()
    b.close()
    host.join(5)
    host_region.close()
    os.unlink(path)


def test_handshake_caches_device_and_window(pair):
    session, _ = pair
    assert session.device == DEVICE and session.vgpu["compute"] == 50
    assert session.window_size == WINDOW[1] and len(session.view) == WINDOW[1]


def test_queued_calls_are_sent_at_once_with_no_reply(pair):
    session, host = pair
    for i in range(3):
        session.queue(Op.MEM_FREE, (0x1000 + i,))
    reply = session.call(Op.MEM_GET_INFO)
    assert reply.status == 0 and reply.values == (DEVICE["total_memory"], DEVICE["total_memory"])
    assert [c.op for c in host.calls] == [Op.MEM_FREE] * 3 + [Op.MEM_GET_INFO]
    assert all(c.queued for c in host.calls[:3])


def test_error_of_a_queued_call_surfaces_at_the_synchronising_call(pair):
    session, host = pair
    host.fail_queued.add(Op.MEM_FREE)
    session.queue(Op.MEM_FREE, (0xDEAD,))
    assert session.call(Op.MEM_GET_INFO).status == 0  # not synchronising: no report
    assert session.call(Op.CTX_SYNCHRONIZE).status == 1
    assert session.call(Op.CTX_SYNCHRONIZE).status == 0  # reported once


def test_synchronize_reports_an_error_reply_and_a_queued_calls_error_once(pair):
    """A reply that is not the plain success (here a queued call's error, reported with its text
    by the host) is decoded the general way; the next synchronise is a success again."""
    session, host = pair
    host.fail_queued.add(Op.MEM_FREE)
    session.queue(Op.MEM_FREE, (0xDEAD,))
    assert session.synchronize(Op.STREAM_SYNCHRONIZE, 0) == 1
    assert session.synchronize(Op.STREAM_SYNCHRONIZE, 0) == 0


def test_synchronize_reports_an_error_the_guest_deferred_once(pair):
    session, _ = pair
    session.defer(CUresult.CUDA_ERROR_INVALID_VALUE)
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == CUresult.CUDA_ERROR_INVALID_VALUE
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0


def test_synchronize_refuses_a_stream_that_is_no_u64_and_sends_nothing(pair):
    session, host = pair
    with pytest.raises(LocalProtocolError):
        session.synchronize(Op.STREAM_SYNCHRONIZE, -1)
    assert session.call(Op.MEM_GET_INFO).status == 0
    assert [c.op for c in host.calls] == [Op.MEM_GET_INFO]


def test_copies_bigger_than_the_window_go_in_chunks_and_come_back(pair):
    session, host = pair
    ring = WINDOW[1] - MAILBOX_BYTES  # the window less its mailbox
    n = ring * 3 + 1234
    ptr = session.call(Op.MEM_ALLOC, (n,)).values[0]
    data = os.urandom(n)
    assert session.htod(ptr, memoryview(data)) == 0
    htods = [c for c in host.calls if c.op == Op.MEMCPY_HTOD]
    assert len(htods) == 4 and max(c.args[2] for c in htods) == ring
    assert max(c.args[1] + c.args[2] for c in htods) <= ring  # never into the mailbox
    assert host.memory[ptr] == data
    out = bytearray(n)
    assert session.dtoh(memoryview(out), ptr) == 0
    assert out == data


def test_a_full_ring_sends_fence_and_starts_again(pair):
    session, host = pair
    ptr = session.call(Op.MEM_ALLOC, (4096,)).values[0]
    for _ in range(WINDOW[1] // 4096 + 2):
        off = session.reserve(4096)  # (not given back: as a queued copy's bytes until the next FENCE)
        session.view[off: off + 4096] = b"x" * 4096
        session.queue(Op.MEMCPY_HTOD, (ptr, off, 4096, 0))
    session.call(Op.CTX_SYNCHRONIZE)
    ops = [c.op for c in host.calls]
    assert Op.FENCE in ops
    offsets = [c.args[1] for c in host.calls if c.op == Op.MEMCPY_HTOD]
    assert offsets[0] == 0 and 0 in offsets[1:] and max(offsets) + 4096 <= WINDOW[1] - MAILBOX_BYTES

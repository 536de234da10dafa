"""The client session against a fake host over a socketpair: batching, the ring, deferred errors."""

import os
import socket
import struct
import tempfile
from dataclasses import replace

import pytest

from kvmgpu_guest.channel import UnixTransport
from kvmgpu_guest.client import Session
from kvmgpu_guest.config import GuestConfig
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.mailbox import MAILBOX_BYTES
from kvmgpu_wire.protocol import Op
from kvmgpu_wire.region import Region

from fakehost import DEVICE, FakeHost

WINDOW = (4096, 64 * 1024)
BATCH_BYTES = GuestConfig().batch_bytes
FIRST_BATCH = GuestConfig().first_batch


@pytest.fixture
def config():
    """The sessions' configuration (a test parametrizes `config` for other settings)."""
    return GuestConfig()


def _pair(awake: bool, guest_looks: bool = True, config: GuestConfig | None = None):
    fd, path = tempfile.mkstemp(prefix="kvmgpu-fake-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.close(fd)
    guest_region = Region.open_file(path, 1 << 20, create=True)
    host_region = Region.open_file(path)
    a, b = socket.socketpair()
    host = FakeHost(b, host_region, WINDOW)
    host.awake = awake
    host.start()
    session = Session(UnixTransport("socketpair", a), guest_region, session_id=3, config=config or GuestConfig())
    session.handshake()
    if not guest_looks:
        # the guest posts whatever the host's word says: as when the host blocks just after the
        # guest looked at it (the race that post-then-ring is for), every time
        session._box.host_awake = lambda: True
    yield session, host
    session.close()
    b.close()
    host.join(5)
    host_region.close()
    os.unlink(path)


@pytest.fixture
def pair(config):
    """A session and a fake host that sleeps between messages and says so too late for the guest
    (its posts ring it)."""
    yield from _pair(awake=False, guest_looks=False, config=config)


@pytest.fixture
def sleeping_pair(config):
    """... and one whose guest sees that the host sleeps."""
    yield from _pair(awake=False, config=config)


@pytest.fixture
def awake_pair(config):
    """... and one that looks at the mailbox every millisecond."""
    yield from _pair(awake=True, config=config)


def test_handshake_caches_device_and_window(pair):
    session, _ = pair
    assert session.device == DEVICE and session.vgpu["compute"] == 50
    assert session.window_size == WINDOW[1] and len(session.view) == WINDOW[1]


def test_queued_calls_wait_for_the_next_call_and_go_first(pair):
    session, host = pair
    for i in range(3):
        session.queue(Op.MEM_FREE, (0x1000 + i,))
    assert host.calls == []  # nothing written yet
    reply = session.call(Op.MEM_GET_INFO)
    assert reply.status == 0 and reply.values == (DEVICE["total_memory"], DEVICE["total_memory"])
    assert [c.op for c in host.calls] == [Op.MEM_FREE] * 3 + [Op.MEM_GET_INFO]
    assert all(c.queued for c in host.calls[:3])


def test_a_big_batch_is_written_without_waiting(pair):
    session, host = pair
    frames = BATCH_BYTES // 100 + 10
    for _ in range(frames):
        session.queue_launch(77, 1, 1, 1, 1, 1, 1, 0, 0, b"\0" * 20)
    assert len(session._batch) < BATCH_BYTES
    session.call(Op.CTX_SYNCHRONIZE)
    assert sum(c.op == Op.LAUNCH for c in host.calls) == frames


def test_error_of_a_queued_call_surfaces_at_the_synchronising_call(pair):
    session, host = pair
    host.fail_queued.add(Op.MEM_FREE)
    session.queue(Op.MEM_FREE, (0xDEAD,))
    assert session.call(Op.MEM_GET_INFO).status == 0  # not synchronising: no report
    assert session.call(Op.CTX_SYNCHRONIZE).status == 1
    assert session.call(Op.CTX_SYNCHRONIZE).status == 0  # reported once


@pytest.mark.parametrize("op, stream", [(Op.STREAM_SYNCHRONIZE, 5), (Op.CTX_SYNCHRONIZE, 0)])
def test_synchronize_sends_the_batch_and_the_call_in_one_write_and_says_success(pair, op, stream):
    session, host = pair
    session.queue_launch(77, 1, 1, 1, 1, 1, 1, 0, 0, b"\0" * 20)
    assert session.synchronize(op, stream) == 0
    assert [c.op for c in host.calls] == [Op.LAUNCH, op]
    assert host.calls[1].args == ((stream,) if op == Op.STREAM_SYNCHRONIZE else ())
    assert not session.conn._pending  # the reply was taken: nothing is awaited any more
    assert session.call(Op.MEM_GET_INFO).status == 0  # and the next call pairs with its own reply


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
    with pytest.raises(struct.error):
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


@pytest.mark.parametrize("config", [GuestConfig(pipe_min=4096, pipe_chunk=4096)])
def test_a_synchronous_copy_in_chunks_gives_the_whole_ring_back(pair):
    # Each sync copy of several chunks used to give back only its last chunk: the next copies
    # walked through the window (cold pages) and wrapped with a FENCE every few copies.
    session, host = pair
    n = 4 * 4096  # four chunks
    ptr = session.call(Op.MEM_ALLOC, (n,)).values[0]
    data = memoryview(os.urandom(n))
    for _ in range(3):
        assert session.htod(ptr, data) == 0
        assert session._head == 0
    htods = [c for c in host.calls if c.op == Op.MEMCPY_HTOD]
    assert len(htods) == 12 and max(c.args[1] for c in htods) < n
    assert Op.FENCE not in [c.op for c in host.calls]
    assert host.memory[ptr] == bytes(data)


def test_a_full_ring_sends_fence_and_starts_again(pair):
    session, host = pair
    ptr = session.call(Op.MEM_ALLOC, (4096,)).values[0]
    chunk = memoryview(b"x" * 4096)
    for _ in range(WINDOW[1] // 4096 + 2):
        session.htod(ptr, chunk, sync=False)
    session.call(Op.CTX_SYNCHRONIZE)
    ops = [c.op for c in host.calls]
    assert Op.FENCE in ops
    offsets = [c.args[1] for c in host.calls if c.op == Op.MEMCPY_HTOD]
    assert offsets[0] == 0 and 0 in offsets[1:] and max(offsets) + 4096 <= WINDOW[1] - MAILBOX_BYTES


def test_a_synchronous_copy_that_need_not_wait_is_sent_at_once_and_queued(pair):
    session, host = pair
    ptr = session.call(Op.MEM_ALLOC, (8192,)).values[0]
    data = os.urandom(8192)
    assert session.htod(ptr, memoryview(data), sync=True, wait=False) == 0
    assert session._head == 8192 and not session._batch  # sent, and the ring not given back
    session.call(Op.CTX_SYNCHRONIZE)
    copy = next(c for c in host.calls if c.op == Op.MEMCPY_HTOD)
    assert copy.queued and host.memory[ptr] == data
    assert session._head == 0  # after a context synchronize nothing queued uses the window


@pytest.fixture
def staged(config):
    """The pair with 4 KiB staging slots (the window is 64 KiB)."""
    pairs = _pair(awake=False, guest_looks=False, config=replace(config, stage_chunk=4096))
    session, host = next(pairs)
    assert session._stage_base > 0
    yield session, host
    next(pairs, None)


def test_staged_copies_refill_a_slot_when_the_host_says_it_is_done(staged, monkeypatch):
    import kvmgpu_guest.client as client
    monkeypatch.setattr(client, "STAGE_WAIT_S", 5.0)  # a FENCE here would mean the done word failed
    session, host = staged
    ptr = session.call(Op.MEM_ALLOC, (40000,)).values[0]
    data = os.urandom(40000)  # ten slots' worth: each slot is refilled
    assert session.htod(ptr, memoryview(data), wait=False) == 0
    session.call(Op.CTX_SYNCHRONIZE)
    ops = [c.op for c in host.calls]
    assert ops.count(Op.MEMCPY_HTOD_STAGED) == 10 and Op.FENCE not in ops
    assert host.memory[ptr] == data


def test_staging_slots_are_as_big_as_the_window_allows():
    """16 MiB slots where the window holds four times the two of them, halved down to 1 MiB in
    smaller windows (a process behind the guest agent gets 1/16 of the region), none below that."""
    from kvmgpu_guest.client import _slot_size
    MiB = 1 << 20
    assert GuestConfig().stage_chunk == 16 * MiB and GuestConfig().stage_slots == 2
    assert _slot_size(1 << 30, 16 * MiB, 2) == 16 * MiB
    assert _slot_size(128 * MiB + 4096, 16 * MiB, 2) == 16 * MiB
    assert _slot_size(128 * MiB, 16 * MiB, 2) == 8 * MiB
    assert _slot_size(20 * MiB, 16 * MiB, 2) == 2 * MiB
    assert _slot_size(8 * MiB + 4096, 16 * MiB, 2) == MiB
    assert _slot_size(8 * MiB, 16 * MiB, 2) == 0


@pytest.mark.parametrize("config", [GuestConfig(stage_chunk=4096, stage_max=8192)])
def test_big_copies_go_through_big_slots_or_else_the_ring(pair, monkeypatch):
    """With slots of 8 MiB and up every synchronous copy into an allocation is staged; with smaller
    ones those over KVMGPU_STAGE_MAX go through the ring (queued MEMCPY_HTOD in chunks)."""
    import kvmgpu_guest.client as client
    session, host = pair
    ptr = session.call(Op.MEM_ALLOC, (20000,)).values[0]
    data = os.urandom(20000)
    for stage_all, op in ((1 << 30, Op.MEMCPY_HTOD), (4096, Op.MEMCPY_HTOD_STAGED)):
        monkeypatch.setattr(client, "STAGE_ALL", stage_all)
        host.calls.clear()
        assert session.htod(ptr, memoryview(data), wait=False) == 0
        assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
        assert {c.op for c in host.calls} == {op, Op.CTX_SYNCHRONIZE}
        assert host.memory[ptr] == data


@pytest.mark.parametrize("config", [GuestConfig(copy_split=1024)])
def test_bulk_copies_go_through_the_copier_both_ways(staged, monkeypatch):
    """The staged slots' bytes and a DtoH's bytes out of the window are copied by the copier
    (kvmgpu_guest/copier.c) where it is built and the copy is two KVMGPU_COPY_SPLITs or more."""
    session, host = staged
    real = session._copies.copier
    assert real is not None, "kvmgpu_guest._copier is not built (make venv builds it)"
    sizes = []

    class Spy:
        def copy(self, dst, src, n, piece):
            sizes.append(n)
            real.copy(dst, src, n, piece)
    monkeypatch.setattr(session._copies, "copier", Spy())
    ptr = session.call(Op.MEM_ALLOC, (40000,)).values[0]
    data = bytearray(os.urandom(40000))  # (a read-only buffer is copied the plain way)
    assert session.htod(ptr, memoryview(data), wait=False) == 0
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
    assert host.memory[ptr] == data and sum(sizes) == 40000  # ten 4 KiB slots' worth
    sizes.clear()
    out = bytearray(40000)
    assert session.dtoh(memoryview(out), ptr) == 0
    assert out == data and sum(sizes) >= 40000 - 2048


def test_a_host_that_never_says_done_gets_a_fence_and_the_copy_still_lands(staged, monkeypatch):
    import kvmgpu_guest.client as client
    monkeypatch.setattr(client, "STAGE_WAIT_S", 0.001)
    session, host = staged
    host.say_staged_done = False
    ptr = session.call(Op.MEM_ALLOC, (40000,)).values[0]
    data = os.urandom(40000)
    assert session.htod(ptr, memoryview(data), wait=False) == 0
    session.call(Op.CTX_SYNCHRONIZE)
    assert Op.FENCE in [c.op for c in host.calls]
    assert host.memory[ptr] == data


# --- the mailbox (kvmgpu_wire/mailbox.py) ----------------------------------------------------------

def test_a_call_is_posted_with_the_batch_and_rings_a_host_that_sleeps(pair):
    session, host = pair
    session.queue(Op.MEM_FREE, (0x1000,))
    reply = session.call(Op.MEM_GET_INFO)
    assert reply.values == (DEVICE["total_memory"], DEVICE["total_memory"])
    assert [c.op for c in host.calls] == [Op.MEM_FREE, Op.MEM_GET_INFO]
    assert host.posts == 1 and host.doorbells == 1
    assert session.synchronize(Op.STREAM_SYNCHRONIZE, 0) == 0
    assert host.posts == 2 and host.doorbells == 2


def test_a_host_that_says_it_sleeps_gets_the_call_on_the_channel(sleeping_pair):
    """Its channel wakes it anyway: a post would only add the DOORBELL's turn (and the answer's
    look in the mailbox). So nothing is posted, nobody is rung."""
    session, host = sleeping_pair
    session.queue(Op.MEM_FREE, (0x1000,))
    assert session.call(Op.MEM_GET_INFO).values == (DEVICE["total_memory"],) * 2
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
    assert [c.op for c in host.calls] == [Op.MEM_FREE, Op.MEM_GET_INFO, Op.CTX_SYNCHRONIZE]
    assert host.posts == 0 and host.doorbells == 0 and host.rung == 0


def test_a_host_that_is_awake_is_not_rung(awake_pair):
    session, host = awake_pair
    for _ in range(3):
        assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
    assert session.call(Op.MEM_GET_INFO).status == 0
    assert host.posts == 4 and host.doorbells == 0
    # (it looks every millisecond: the guest's spin is over by then, and it is rung)


def test_a_guest_that_went_to_sleep_on_its_answer_is_rung(awake_pair):
    session, host = awake_pair
    host.answer_after = 0.02  # far past the guest's spin
    assert session.call(Op.MEM_GET_INFO).values == (DEVICE["total_memory"],) * 2
    assert host.rung == 1
    host.answer_after = 0
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0  # and the next call pairs with its own answer
    assert host.posts == 2


def test_an_answer_the_host_sent_through_the_channel_is_read_there(pair):
    session, host = pair
    host.answer_on_channel = True
    host.fail_queued.add(Op.MEM_FREE)
    session.queue(Op.MEM_FREE, (0xDEAD,))
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 1  # the queued call's error, reported once
    assert session.call(Op.MEM_GET_INFO).status == 0
    assert host.posts == 2


def test_after_frames_written_to_the_channel_the_next_call_goes_there_too(pair):
    """The host takes a post as it sees it; frames still unread on the channel would come after it.
    So the first call after a batch was written goes on the channel; the one after it is posted."""
    session, host = pair
    frames = BATCH_BYTES // 100 + 10
    for _ in range(frames):
        session.queue_launch(77, 1, 1, 1, 1, 1, 1, 0, 0, b"\0" * 20)
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
    assert host.posts == 0
    assert [c.op for c in host.calls] == [Op.LAUNCH] * frames + [Op.CTX_SYNCHRONIZE]
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
    assert host.posts == 1


def test_a_call_too_big_for_the_mailbox_goes_on_the_channel(pair, monkeypatch):
    import kvmgpu_guest.client as client
    session, host = pair
    session.queue(Op.MEM_FREE, (0x1000,))
    monkeypatch.setattr(client, "REQUEST_MAX", 40)  # the queued call and the call are 60 bytes
    assert session.call(Op.MEM_GET_INFO).status == 0
    assert host.posts == 0 and [c.op for c in host.calls] == [Op.MEM_FREE, Op.MEM_GET_INFO]


@pytest.mark.parametrize("config", [GuestConfig(mailbox=False)])
def test_without_the_mailbox_every_call_goes_on_the_channel(sleeping_pair):
    session, host = sleeping_pair
    assert session.call(Op.MEM_GET_INFO).status == 0
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
    assert host.posts == 0 and len(host.calls) == 2
    assert session._ring_size == WINDOW[1] - MAILBOX_BYTES  # the layout is the same


def test_after_a_reply_the_first_batch_goes_small_but_a_launch_waits_for_its_synchronise(pair):
    """Right after a reply the GPU is idle: the next launches go as soon as they make FIRST_BATCH
    bytes; but never one frame alone, so a launch + synchronise stays one message (posted whole)."""
    session, host = pair
    assert session.call(Op.MEM_GET_INFO).status == 0
    big = b"\0" * (FIRST_BATCH + 8)  # one launch frame over FIRST_BATCH by itself
    session.queue_launch(77, 1, 1, 1, 1, 1, 1, 0, 0, big)
    assert session._batch  # not sent alone
    assert session.synchronize(Op.CTX_SYNCHRONIZE) == 0
    assert host.posts == 2 and [c.op for c in host.calls][-2:] == [Op.LAUNCH, Op.CTX_SYNCHRONIZE]
    small = b"\0" * 24
    n = 0
    while session._batch or n == 0:  # the stencil's launches: out after a few
        session.queue_launch(77, 1, 1, 1, 1, 1, 1, 0, 0, small)
        n += 1
    assert n == max(2, -(-FIRST_BATCH // (92 + 24))) == 5

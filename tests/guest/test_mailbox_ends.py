"""The mailbox's two ends over one buffer: what a post carries, what the host takes, what it answers,
and who is told to ring whom."""

import json
import subprocess
import sys

import pytest

from kvmgpu_wire.mailbox import MAILBOX_BYTES, MAILBOX_MIN_WINDOW, REPLY_MAX, REQUEST_MAX, Mailbox, mailbox_at


@pytest.fixture
def ends():
    window = memoryview(bytearray(MAILBOX_MIN_WINDOW))
    at = mailbox_at(len(window))
    host = Mailbox(window, at)
    host.reset()
    guest = Mailbox(window, at)
    yield guest, host
    guest.release()
    host.release()


def test_the_mailbox_is_the_last_page_of_a_window_big_enough():
    assert mailbox_at(MAILBOX_MIN_WINDOW) == MAILBOX_MIN_WINDOW - MAILBOX_BYTES
    assert mailbox_at(64 << 20) == (64 << 20) - MAILBOX_BYTES
    assert mailbox_at(MAILBOX_MIN_WINDOW - 4096) is None


def test_a_post_is_taken_once_and_answered_with_its_number(ends):
    guest, host = ends
    assert host.take() is None  # nothing posted yet
    assert guest.post(b"head", b"frame") is True  # the host's reset says it is awake
    assert not guest.answered()
    assert host.take() == b"headframe"
    assert host.take() is None  # taken once
    assert host.answer(b"reply") is False  # the guest did not say it sleeps
    assert guest.answered() and guest.answer_bytes() == b"reply"
    guest.post(b"", b"second")
    assert not guest.answered()  # the last answer was to the first post
    assert host.take() == b"second"


def test_an_empty_answer_means_the_reply_went_through_the_channel(ends):
    guest, host = ends
    guest.post(b"", b"x")
    host.take()
    host.answer(b"")
    assert guest.answered() and guest.answer_bytes() is None


def test_the_guest_rings_a_sleeping_host_and_the_host_rings_a_sleeping_guest(ends):
    guest, host = ends
    host.set_awake(False)
    assert guest.post(b"", b"x") is False  # ring it
    host.set_awake(True)
    host.take()
    assert guest.sleep() is False  # no answer yet: block on the channel
    assert host.answer(b"r") is True  # ring it
    assert guest.answered()
    guest.wake()
    guest.post(b"", b"y")
    host.take()
    assert host.answer(b"r") is False


def test_a_guest_that_sleeps_after_the_answer_came_does_not_block(ends):
    guest, host = ends
    guest.post(b"", b"x")
    host.take()
    host.answer(b"r")
    assert guest.sleep() is True


def test_a_request_length_over_the_limit_is_refused_and_an_earlier_sessions_bytes_are_not_taken(ends):
    guest, host = ends
    guest.words[1] = REQUEST_MAX + 1  # the guest's own word: anything may be there
    guest.words[0] = 7
    with pytest.raises(ValueError, match="at most"):
        host.take()
    host.reset()  # a new session over the same window: nothing is posted
    assert host.take() is None and host.words[18] == 1  # and the host is awake
    assert REQUEST_MAX + REPLY_MAX + 128 == MAILBOX_BYTES


def test_the_host_copies_a_request_out_before_anyone_reads_it(ends):
    guest, host = ends
    guest.post(b"", b"abcd")
    taken = host.take()
    guest.request[:4] = b"zzzz"  # the guest writes on after posting
    assert taken == b"abcd"


# --- against a real worker process ------------------------------------------------------------------

GUEST_CALLS = """
import ctypes, sys, time
from kvmgpu_guest import driver as cuda
assert cuda.cuInit(0) == (0,)
_, ctx = cuda.cuCtxCreate(0, cuda.cuDeviceGet(0)[1])
for i in range(300):
    assert cuda.cuCtxSynchronize() == (0,)
    if i % 60 == 0:
        time.sleep(0.003)  # past the worker's spin
_, module = cuda.cuModuleLoadData(open(sys.argv[1], "rb").read())
_, spin = cuda.cuModuleGetFunction(module, b"spin")
ns = ctypes.c_uint64(20_000_000)
params = (ctypes.c_void_p * 1)(ctypes.addressof(ns))
t = time.perf_counter()
assert cuda.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, params, 0) == (0,)
assert cuda.cuCtxSynchronize() == (0,)
assert time.perf_counter() - t >= 0.02
assert cuda.cuCtxDestroy(ctx) == (0,)
print("DONE")
"""


@pytest.mark.parametrize("poll_us", ["0", "50"])
def test_a_real_worker_answers_posts_awake_and_asleep_and_rings_a_guest_that_sleeps(tmp_path, poll_us):
    """The guest's library posts to a worker that spins after each message (50 µs) and to one that
    never does (0: each post finds it asleep or about to be, and the post rings or the worker's
    last look finds it); pauses that let it fall asleep; and a 20 ms kernel, whose answer comes
    after the guest has gone to sleep on the channel (the worker rings it). No post may be lost:
    each call returns. The worker counts the posts."""
    from loopback import KERNELS, LoopbackWorker

    stats = tmp_path / "stats.json"
    w = LoopbackWorker(env={"KVMGPU_WORKER_POLL_US": poll_us}, args=("--stats-file", str(stats)))
    try:
        proc = subprocess.run([sys.executable, "-c", GUEST_CALLS, str(KERNELS)], capture_output=True, text=True,
                              timeout=60, env=w.env)
        assert proc.returncode == 0 and proc.stdout.split() == ["DONE"], \
            f"a call failed or never returned: {proc.stdout}\n{proc.stderr}\n{w.output()}"
    finally:
        w.stop()
    if poll_us == "50":  # (a worker that never spins may find every post asleep: they go on the channel)
        assert json.loads(stats.read_text())["mailbox_posts"] > 0

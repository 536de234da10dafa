"""The mailbox's two ends over one buffer: what a post carries, what the host takes, what it answers,
and who is told to ring whom."""

import pytest

from kvmgpu_guest.mailbox import (MAILBOX_BYTES, MAILBOX_MIN_WINDOW, REPLY_MAX, REQUEST_MAX, Mailbox,
                                  mailbox_at)


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

"""A session's mailbox: the last MAILBOX_BYTES of its window, where a synchronous call and its
reply travel while both sides are awake, instead of through the channel.

Through the channel a round trip costs four system calls and the polls that find the bytes
(docs/performance.md, "Ninth session: the mailbox"); through the mailbox it is a few stores and
loads in memory both sides map. The channel stays the way to wake a side that sleeps: a DOORBELL
frame, sent only when the other side said it is about to block (docs/protocol.md, "The mailbox").

Layout (offsets in the mailbox, little-endian u32 words; the guest's words and the host's words on
cache lines of their own; the op specification's MAILBOX_* constants, in ops.py and kvmgpu_wire.h):

    0    post     guest: the number of its last request
    4    size     guest: that request's length
    8    asleep   guest: 1 while it blocks on the channel for the answer
    64   answer   host: the number of the last request it answered here
    68   length   host: that answer's length (0: the answer went through the channel)
    72   awake    host: 1 while the worker will look at the mailbox before it blocks
    128  request  REQUEST_MAX bytes: whole frames, as they would go on the channel
    2112 reply    REPLY_MAX bytes

Every byte here is the guest's to write: the host copies a request out (its length bounded) before
anything parses it, remembers what it took in its own memory, and never reads back its own words.

Waking: a side that stores its word and then reads the other side's (`post` then `awake`; `answer`
then `asleep`) puts a full fence between the two (`fence`), so of two sides that race, at least one
sees the other (the store-load pair is the one x86 may reorder). Only on x86-64, whose loads and
stores are otherwise in order (TSO): elsewhere the guest does not use the mailbox.
"""

from __future__ import annotations

import platform
import threading

from .ops import (  # noqa: F401 (a smaller window has none)
    MAILBOX_ANSWER as _ANSWER,
    MAILBOX_ASLEEP as _ASLEEP,
    MAILBOX_AWAKE as _AWAKE,
    MAILBOX_BYTES,
    MAILBOX_HEAD as _HEAD,
    MAILBOX_LENGTH as _LENGTH,
    MAILBOX_MIN_WINDOW,
    MAILBOX_POST as _POST,
    MAILBOX_REQUEST_MAX as REQUEST_MAX,
    MAILBOX_SIZE as _SIZE,
)

REPLY_MAX = MAILBOX_BYTES - _HEAD - REQUEST_MAX
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")

_lock = threading.Lock()


def fence() -> None:
    """A full memory fence: an uncontended lock taken and given back is a locked read-modify-write
    (CPython's locks are semaphores or atomics), which x86 never reorders a load across."""
    _lock.acquire()
    _lock.release()


def mailbox_at(window_size: int) -> int | None:
    """Where a window of `window_size` bytes has its mailbox (its last MAILBOX_BYTES), or None."""
    return window_size - MAILBOX_BYTES if window_size >= MAILBOX_MIN_WINDOW else None


class Mailbox:
    """Both ends of one session's mailbox, over `view` (a window's memoryview) at `at`."""

    def __init__(self, view: memoryview, at: int):
        self.view = view[at: at + MAILBOX_BYTES]
        self.words = self.view[:_HEAD].cast("I")
        self.request = self.view[_HEAD: _HEAD + REQUEST_MAX]
        self.reply = self.view[_HEAD + REQUEST_MAX:]
        self.number = 0  # guest: its last post; host: the last post it took

    def release(self) -> None:
        for v in (self.words, self.request, self.reply, self.view):
            v.release()

    # --- the guest's end -------------------------------------------------------------------------

    def post(self, head, frame) -> bool:
        """Post `head` + `frame` (whole frames, at most REQUEST_MAX bytes together) as the next
        request; whether the worker is awake (if not, ring it: a DOORBELL on the channel)."""
        n = len(head)
        self.request[:n] = head
        self.request[n: n + len(frame)] = frame
        w = self.words
        w[_SIZE] = n + len(frame)
        self.number = number = (self.number + 1) & 0xFFFFFFFF
        w[_POST] = number
        fence()
        return w[_AWAKE] == 1

    def host_awake(self) -> bool:
        """Whether the worker says it will look at the mailbox: a hint (it may block the moment
        after; `post` fences and reads it again, and rings a worker that blocked)."""
        return self.words[_AWAKE] == 1

    def answered(self) -> bool:
        """Whether the worker has answered the last post."""
        return self.words[_ANSWER] == self.number

    def sleep(self) -> bool:
        """Say this side is about to block on the channel; whether the answer came meanwhile (then
        do not block: `wake`)."""
        self.words[_ASLEEP] = 1
        fence()
        return self.words[_ANSWER] == self.number

    def wake(self) -> None:
        self.words[_ASLEEP] = 0

    def answer_bytes(self) -> bytes | None:
        """The answer to the last post (once `answered`), or None where it went through the
        channel."""
        n = self.words[_LENGTH]
        return bytes(self.reply[:n]) if 0 < n <= REPLY_MAX else None

    # --- the host's end --------------------------------------------------------------------------

    def posted(self) -> bool:
        return self.words[_POST] != self.number

    def take(self) -> bytes | None:
        """The new request, copied out (the guest may go on writing the mailbox), or None when
        there is none. Its length is the guest's word: one over REQUEST_MAX is refused
        (ValueError), which the caller treats as a protocol violation."""
        w = self.words
        number = w[_POST]
        if number == self.number:
            return None
        self.number = number
        n = w[_SIZE]
        if n > REQUEST_MAX:
            raise ValueError(f"a mailbox request of {n} bytes (at most {REQUEST_MAX})")
        return bytes(self.request[:n])

    def answer(self, data) -> bool:
        """Answer the request taken last with `data` (at most REPLY_MAX bytes; b"": the answer
        went through the channel); whether the guest said it sleeps (then ring it: a DOORBELL on
        the channel)."""
        w = self.words
        n = len(data)
        if n:
            self.reply[:n] = data
        w[_LENGTH] = n
        w[_ANSWER] = self.number
        fence()
        return w[_ASLEEP] == 1

    def reset(self) -> None:
        """Host, before the session's WELCOME: nothing posted or answered (the window's bytes may
        be an earlier session's), and awake (the worker that makes it looks at every mailbox
        before it blocks)."""
        self.view[:_HEAD] = bytes(_HEAD)
        self.number = 0
        self.words[_AWAKE] = 1

    def set_awake(self, awake: bool) -> None:
        self.words[_AWAKE] = 1 if awake else 0

"""Synchronous host-to-device copies (benchgpu's loop: up to 20 cuMemcpyHtoD from pageable memory,
then one cuCtxSynchronize) with the guest's staging laid out one way and another in turn, in one
guest process against one worker process, native cuda-bindings beside them. Between ways the
session lays its window out again. GB/s, and the ratio to native. Run on the GPU machine from the
repository root: `PYTHONPATH=guest-agent:. python3 bench/gpu/htod_stage_ab.py`
(ROUNDS=n, SIZES=1,16,64 in MiB; WAYS=copier for the guest's copier (kvmgpu_guest/copier.c, built
in place: `cd guest-agent && python3 setup.py build_ext --inplace`) against the ways before it and
its knobs; WAYS=steal, quiet, nt, demote or spin for the trials below, not kept)."""
import ctypes
import itertools
import os
import sys
import threading
import time
from dataclasses import replace

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

MiB = 1 << 20
SIZES = [int(s) * MiB for s in os.environ.get("SIZES", "1,16,64").split(",")]
_, stop = B.loopback_worker(max(SIZES) + 64 * MiB)
from cuda.bindings import driver as nat  # noqa: E402

from kvmgpu_guest import client, driver as cu  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "9"))


def stealing(piece: int, helpers: int):
    """For a session's copies (`client._Copies`), a `copy` whose copies under two copy pieces go in
    `piece`-byte pieces, each taken by whichever of this thread and `helpers` pool threads is free
    (none waits for a helper to wake)."""
    return lambda copies: _stealing(copies, piece, helpers)


def _stealing(copies, piece: int, helpers: int):
    plain = copies.copy

    def copy(dst, dpos, src, spos, n):
        d, s = client._address(dst), client._address(src)
        if n >= 2 * copies.piece or n < 2 * piece or d is None or s is None:
            return plain(dst, dpos, src, spos, n)
        d, s, count, taken = d + dpos, s + spos, (n + piece - 1) // piece, itertools.count()

        def take() -> None:
            while (i := next(taken)) < count:
                ctypes.memmove(d + i * piece, s + i * piece, min(piece, n - i * piece))

        def helper(busy) -> None:
            with busy:  # held while it may copy: the caller waits on it at the end
                take()
        busy = [threading.Lock() for _ in range(helpers)]
        pool = client._get_pool(max(helpers, copies.threads - 1))
        for lock in busy:
            pool.submit(helper, lock)
        take()
        for lock in busy:
            with lock:
                pass
    return copy


def quiet(limit: int):
    """A `Session._htod_staged` that, for a copy up to `limit` bytes, first waits until the host has
    done every staged copy, so that no DMA reads the other slot while this one is filled."""
    plain = client.Session._htod_staged

    def staged(self, dst, src):
        if len(src) <= limit and self._staged:
            last, give_up = self._staged[-1], time.perf_counter() + 1
            while (self._done[0] - last) & 0xFFFFFFFF >= 0x80000000:
                if time.perf_counter() > give_up:
                    raise RuntimeError("the host never said the staged copies were done")
            self._staged.clear()
        return plain(self, dst, src)
    return staged


NT_C = r"""
#include <emmintrin.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
/* non-temporal stores: the destination's lines go to memory, not into this CPU's cache */
#define NT_COPY(name, attr, T, load, stream)                                   \
attr void name(char *d, const char *s, size_t n) {                          \
    size_t head = (64 - ((uintptr_t)d & 63)) & 63, i = 0;                     \
    if (head > n) head = n;                                                   \
    memcpy(d, s, head); d += head; s += head; n -= head;                      \
    for (; i + 64 <= n; i += 64)                                              \
        for (int k = 0; k < 64; k += sizeof(T))                               \
            stream((T *)(d + i + k), load((const T *)(s + i + k)));           \
    _mm_sfence();                                                             \
    memcpy(d + i, s + i, n - i);                                              \
}
NT_COPY(nt_sse2, , __m128i, _mm_loadu_si128, _mm_stream_si128)
NT_COPY(nt_avx2, __attribute__((target("avx2"))), __m256i, _mm256_loadu_si256, _mm256_stream_si256)
/* a plain copy, then each destination line pushed out of this core's caches one way or another:
   CLDEMOTE (0f 1c /0: to the shared L3, a NOP where the CPU lacks it), CLWB (written back, kept
   clean), CLFLUSHOPT (written back and dropped) */
#define AFTER_COPY(name, insn)                                                 \
void name(char *d, const char *s, size_t n) {                                 \
    memcpy(d, s, n);                                                          \
    for (uintptr_t p = (uintptr_t)d & ~(uintptr_t)63; p < (uintptr_t)d + n; p += 64) \
        __asm__ volatile(insn :: "a"(p) : "memory");                          \
}
AFTER_COPY(copy_demote, ".byte 0x0f, 0x1c, 0x00")     /* cldemote (%rax) */
AFTER_COPY(copy_clwb, ".byte 0x66, 0x0f, 0xae, 0x30") /* clwb (%rax) */
AFTER_COPY(copy_flush, ".byte 0x66, 0x0f, 0xae, 0x38") /* clflushopt (%rax) */

/* a copy split among this thread and `helpers` threads that spin, never sleeping, on a word each
   (no wake-up to wait for: what the cost of splitting is without it) */
#include <pthread.h>
#include <stdatomic.h>
struct job { _Atomic int state; char *d; const char *s; size_t n; char pad[64]; };
static struct job jobs[8];
static int started;
static void *helper_main(void *arg) {
    struct job *j = arg;
    for (;;) {
        while (atomic_load_explicit(&j->state, memory_order_acquire) != 1)
            __builtin_ia32_pause();
        memcpy(j->d, j->s, j->n);
        atomic_store_explicit(&j->state, 2, memory_order_release);
    }
    return 0;
}
void split_copy(char *d, const char *s, size_t n, int helpers) {
    pthread_t t;
    for (; started < helpers; started++)
        pthread_create(&t, 0, helper_main, &jobs[started]);
    size_t part = ((n + helpers) / (helpers + 1) + 4095) & ~(size_t)4095, pos = part;
    if (part == 0 || part >= n) {
        memcpy(d, s, n);
        return;
    }
    for (int i = 0; i < helpers && pos < n; i++, pos += part) {
        jobs[i].d = d + pos; jobs[i].s = s + pos; jobs[i].n = n - pos < part ? n - pos : part;
        atomic_store_explicit(&jobs[i].state, 1, memory_order_release);
    }
    memcpy(d, s, part);
    for (int i = 0; i < helpers; i++)
        if (atomic_load(&jobs[i].state) == 1 || atomic_load(&jobs[i].state) == 2) {
            while (atomic_load_explicit(&jobs[i].state, memory_order_acquire) != 2)
                __builtin_ia32_pause();
            atomic_store(&jobs[i].state, 0);
        }
}
"""


def trial_lib():
    import subprocess
    import tempfile
    tmp = tempfile.mkdtemp()
    with open(f"{tmp}/nt.c", "w") as f:
        f.write(NT_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-pthread", f"{tmp}/nt.c", "-o", f"{tmp}/nt.so"], check=True)
    return ctypes.CDLL(f"{tmp}/nt.so")


def copy_with(fn, below: int = 1 << 62):
    """For a session's copies (`client._Copies`), a `copy` that copies with `fn` (one of NT_C's) in
    place of memmove, for copies under `below` bytes (in the same pieces on the same threads)."""
    fn.argtypes, fn.restype = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t), None
    return lambda copies: _copy_with(copies, fn, below)


def _copy_with(copies, fn, below):
    plain = copies.copy

    def copy(dst, dpos, src, spos, n):
        d, s = client._address(dst), client._address(src)
        if n >= below or d is None or s is None:
            return plain(dst, dpos, src, spos, n)
        d, s = d + dpos, s + spos
        pieces = max(1, min(copies.threads, n // copies.piece))
        step = (n // pieces + 4095) & ~4095
        futures = [client._get_pool(copies.threads - 1).submit(fn, d + i, s + i, min(step, n - i))
                   for i in range(step, n, step)] if pieces > 1 else []
        fn(d, s, min(step, n))
        for f in futures:
            f.result()
    return copy


# a way: the session's settings (kvmgpu_guest.config.GuestConfig's fields) for its turn, and "copy" (a
# `copy` for its `client._Copies`) or "Session._htod_staged" (in place of the client's)
WAYS = {"native": None,
        "as is": {},
        "1 MiB slots, the ring from 8 MiB (ninth session)": {"stage_chunk": MiB},
        "4 MiB slots, the ring from 8 MiB": {"stage_chunk": 4 * MiB},
        "4 MiB slots, all staged": {"stage_chunk": 4 * MiB, "stage_max": 1 << 62},
        "8 MiB slots": {"stage_chunk": 8 * MiB},
        "32 MiB slots": {"stage_chunk": 32 * MiB}}
if os.environ.get("WAYS") == "steal":
    WAYS = {"native": None, "as is": {},
            "512 KiB pieces": {"copy_piece": MiB // 2},
            "steal 256K, 1 helper": {"copy": stealing(256 << 10, 1)},
            "steal 128K, 1 helper": {"copy": stealing(128 << 10, 1)},
            "steal 128K, 2 helpers": {"copy": stealing(128 << 10, 2)},
            "steal 64K, 3 helpers": {"copy": stealing(64 << 10, 3)}}
elif os.environ.get("WAYS") == "nt":
    _nt = trial_lib()
    WAYS = {"native": None, "as is": {},
            "nt sse2": {"copy": copy_with(_nt.nt_sse2)},
            "nt avx2": {"copy": copy_with(_nt.nt_avx2)},
            "nt avx2 under 4 MiB": {"copy": copy_with(_nt.nt_avx2, 4 * MiB)},
            "nt avx2, 4 MiB slots": {"copy": copy_with(_nt.nt_avx2), "stage_chunk": 4 * MiB}}
elif os.environ.get("WAYS") == "demote":
    _nt = trial_lib()
    WAYS = {"native": None, "as is": {},
            "3 slots": {"stage_slots": 3},
            **{insn: {"copy": copy_with(fn, 4 * MiB)}  # (the guest's CPU must have the instruction)
               for insn, fn in (("cldemote", _nt.copy_demote), ("clwb", _nt.copy_clwb),
                                ("clflushopt", _nt.copy_flush)) if f" {insn}" in open("/proc/cpuinfo").read()}}
elif os.environ.get("WAYS") == "spin":
    _nt = trial_lib()
    _nt.split_copy.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

    def _split(helpers):
        def copy(dst, dpos, src, spos, n):
            _nt.split_copy(client._address(dst) + dpos, client._address(src) + spos, n, helpers)
        return lambda copies: copy
    WAYS = {"native": None, "as is": {},
            **{f"split, {h} spinning helper(s)": {"copy": _split(h)} for h in (1, 2, 3)}}
elif os.environ.get("WAYS") == "copier":
    if client._copier is None:
        sys.exit("no kvmgpu_guest._copier here: build it first "
                 "(cd guest-agent && python3 setup.py build_ext --inplace)")
    WAYS = {"native": None, "as is": {},
            "without the copier": {"copier": False},
            "copier, 64 KiB pieces": {"copy_split": 64 << 10},
            "copier, 512 KiB pieces": {"copy_split": 512 << 10},
            "copier, 1 helper": {"copier_threads": 2},
            "copier, 3 helpers": {"copier_threads": 4},
            "copier, 5 helpers": {"copier_threads": 6},
            "copier, helpers asleep": {"copy_spin_us": 0}}
elif os.environ.get("WAYS") == "quiet":
    WAYS = {"native": None, "as is": {},
            **{f"quiet up to {n} MiB": {"Session._htod_staged": quiet(n * MiB)} for n in (1, 2, 4)}}



try:
    B._ok(nat.cuInit(0))
    native = B.Workloads(nat, SIZES)
    B._ok(cu.cuInit(0))
    forwarded = B.Workloads(cu, SIZES)
    session = cu._session_for_tools()
    base, plain_staged = session.config, client.Session._htod_staged
    for size in SIZES:
        key = f"htod_pageable_GBps_{size // MiB}M"
        loops = {side: [(fn, value) for f, fn, value in w.figures() if f == key][0]
                 for side, w in (("native", native), ("forwarded", forwarded))}

        def run(name, loops=loops):
            knobs = WAYS[name]
            side = "native" if knobs is None else "forwarded"
            (native if knobs is None else forwarded).current()
            if knobs is not None:
                B._ok(cu.cuCtxSynchronize())  # nothing staged is in flight: lay the window out again
                session.configure(replace(base, **{k: v for k, v in knobs.items()
                                                   if k not in ("copy", "Session._htod_staged")}))
                if "copy" in knobs:
                    session._copies.copy = knobs["copy"](session._copies)
                client.Session._htod_staged = knobs.get("Session._htod_staged", plain_staged)
                with session.lock:
                    session._setup_staging()
            fn, value = loops[side]
            return value(min(fn() for _ in range(3)))
        print(f"--- {size // MiB} MiB, GB/s")
        B.report_turns(B.in_turn(list(WAYS), run, ROUNDS), "GB/s",
                       lambda med, base: f"{med / base:4.2f}x native")
    print("as is: slots of", base.stage_chunk, "bytes, staged up to", base.stage_max,
          "bytes; copy threads:", base.copy_threads)
finally:
    stop()

/* kvmgpu guest: one memcpy shared by the calling thread and a few helper threads. Used by the
 * Python client's extension module (kvmgpu_guest/copier.c, kvmgpu_guest._copier) and by the native
 * library (guest-agent/libcuda/client.c): one copier, in this header (its state is static: each
 * of the two has its own helpers).
 *
 * Why it exists (docs/performance.md, "The guest's copier"): a forwarded host-to-device copy is
 * one CPU copy into the shared window and one DMA out of it, and on the H200 host one thread's
 * copy of 1 MiB takes as long as a native copy from pageable memory (a DMA reading lines the CPU
 * has just written slows the CPU). Several threads copy faster, but waking threads costs tens of
 * us in a VM. Here the helpers take pieces of the copy from an atomic counter, with no lock, and
 * stay awake (spinning) a short while after each copy, so that a run of copies finds them ready;
 * then they sleep on a futex. The caller never waits for a helper to wake: it takes pieces
 * itself, and waits only for pieces a helper has taken, so a copy is never slower than one
 * thread's by more than a futex wake-up call.
 *
 * The addresses are the calling process's own (a buffer of the program's and the session's
 * window); nothing here reads a byte from the host.
 *
 * One job at a time: a caller that finds a job running copies alone. After fork() the child has
 * no helpers (they are started again at its first split copy).
 */
#ifndef KVMGPU_COPIER_H
#define KVMGPU_COPIER_H

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_HELPERS 15

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __asm__ __volatile__("pause")
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() do {} while (0)
#endif

/* The job: written by its caller (holding `busy`) before it opens it; read by the helpers once
 * they have seen it open. `job` is the job's number shifted left by one, with bit 0 set while it
 * is open: one word, so that a helper sees its number and its state together (and the futex the
 * helpers sleep on). */
static struct {
    pthread_mutex_t busy;
    char *dst;
    const char *src;
    size_t size, piece, count;
    _Atomic size_t next;     /* the next piece to take */
    _Atomic uint32_t job;
    _Atomic int inside;      /* helpers that may take pieces of the open job */
    _Atomic int sleepers;    /* helpers asleep on `job` (or about to be) */
    _Atomic int helpers;     /* how many helpers take part (the first `helpers` started) */
    _Atomic long spin_ns;    /* how long a helper spins for the next job before it sleeps */
    int started;             /* helper threads running (in this process: 0 after fork) */
} J = {.busy = PTHREAD_MUTEX_INITIALIZER, .helpers = 0, .spin_ns = 200000};

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void take_pieces(void)
{
    size_t i;
    while ((i = atomic_fetch_add(&J.next, 1)) < J.count) {
        size_t at = i * J.piece, n = J.size - at < J.piece ? J.size - at : J.piece;
        memcpy(J.dst + at, J.src + at, n);
    }
}

/* Wait until `job` is no longer `seen`: spin for spin_ns, then sleep on the futex. */
static void wait_change(uint32_t seen)
{
    long until = now_ns() + atomic_load_explicit(&J.spin_ns, memory_order_relaxed);
    for (unsigned k = 1;; k++) {
        if (atomic_load_explicit(&J.job, memory_order_acquire) != seen)
            return;
        if (k % 64 == 0 && now_ns() > until)
            break;
        cpu_relax();
    }
    atomic_fetch_add(&J.sleepers, 1);
    while (atomic_load(&J.job) == seen)  /* after `sleepers` (seq_cst): a caller sees one or other */
        syscall(SYS_futex, &J.job, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
    atomic_fetch_sub(&J.sleepers, 1);
}

static void *helper_main(void *arg)
{
    int index = (int)(intptr_t)arg;
    uint32_t last = atomic_load(&J.job) >> 1;  /* the last job this helper looked at */
    for (;;) {
        uint32_t job = atomic_load_explicit(&J.job, memory_order_acquire);
        if ((job >> 1) == last || !(job & 1) || index >= atomic_load(&J.helpers)) {
            last = job >> 1;
            wait_change(job);
            continue;
        }
        last = job >> 1;
        atomic_fetch_add(&J.inside, 1);
        if (atomic_load(&J.job) == job)  /* still open (seq_cst: the caller closes, then counts) */
            take_pieces();
        atomic_fetch_sub(&J.inside, 1);
    }
    return NULL;
}

static int start_helpers(int want)
{
    sigset_t all, before;
    pthread_attr_t attr;
    sigfillset(&all);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_sigmask(SIG_BLOCK, &all, &before);  /* signals stay with the program's threads */
    while (J.started < want) {
        pthread_t t;
        if (pthread_create(&t, &attr, helper_main, (void *)(intptr_t)J.started))
            break;
        J.started++;
    }
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    pthread_attr_destroy(&attr);
    return J.started;
}

static void kvmgpu_split_copy(char *dst, const char *src, size_t size, size_t piece)
{
    if (pthread_mutex_trylock(&J.busy)) {  /* another thread's copy has the helpers */
        memcpy(dst, src, size);
        return;
    }
    int helpers = atomic_load(&J.helpers);
    if (J.started < helpers)
        helpers = start_helpers(helpers);
    if (helpers == 0 || size < 2 * piece) {
        pthread_mutex_unlock(&J.busy);
        memcpy(dst, src, size);
        return;
    }
    J.dst = dst;
    J.src = src;
    J.size = size;
    J.piece = piece;
    J.count = (size + piece - 1) / piece;
    atomic_store(&J.next, 0);
    uint32_t number = (atomic_load(&J.job) >> 1) + 1;
    atomic_store(&J.job, number << 1 | 1);  /* open (seq_cst: then `sleepers` is read) */
    if (atomic_load(&J.sleepers))
        syscall(SYS_futex, &J.job, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    take_pieces();
    atomic_store(&J.job, number << 1);  /* closed: no helper joins from now on */
    while (atomic_load(&J.inside))      /* ... and those in it finish the pieces they took */
        cpu_relax();
    pthread_mutex_unlock(&J.busy);
}

static void before_fork(void) { pthread_mutex_lock(&J.busy); }
static void after_fork_parent(void) { pthread_mutex_unlock(&J.busy); }
static void after_fork_child(void)
{
    pthread_mutex_init(&J.busy, NULL);
    J.started = 0;
    atomic_store(&J.inside, 0);
    atomic_store(&J.sleepers, 0);
}

/* How many helper threads take part in a copy (0 to MAX_HELPERS; started at the first copy that
 * needs them), and how long each spins for the next copy before it sleeps. */
static inline void kvmgpu_copier_configure(int helpers, long spin_us)
{
    static int once;
    if (!__atomic_exchange_n(&once, 1, __ATOMIC_RELAXED))
        pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    atomic_store(&J.spin_ns, spin_us * 1000);
    atomic_store(&J.helpers, helpers);
}

static inline int kvmgpu_copier_started(void)
{
    return J.started;
}

#endif

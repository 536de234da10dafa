/* kvmgpu: the worker's launcher thread, the one piece of the host written in C.
 *
 * It launches kernels the worker has already validated in Python (function and stream handles
 * from the VM's own tables, grid and block against the device's limits, the argument size
 * against the function's parameter table): it never reads a byte from the guest other than
 * the argument bytes it hands to the driver, whose size the worker checked. Each record is one
 * cuLaunchKernel with the arguments as one packed buffer (CU_LAUNCH_PARAM_BUFFER_POINTER), as
 * the cuda backend's Python launch path does.
 *
 * Why a thread: a cuLaunchKernel costs the calling thread ~3.5-4.5 us on the H200 and the
 * worker's Python checks of a launch ~1.5 us; done one after the other the worker issued a launch
 * every 5-6 us where native code issues one every ~4. With the driver calls on this thread, the
 * worker checks launch i+1 while launch i is in the driver (docs/performance.md).
 *
 * The worker (one Python thread) packs records into a ring and posts them (kvmgpu_post); this
 * thread launches them in order and counts them done; the worker waits for them all
 * (kvmgpu_finish) before anything that must come after them and before it reuses their slots or
 * the argument bytes they point at. Counters are 32-bit and only grow (wrapping); the ring's
 * size divides 2^32. The thread spins a while when it runs out of records, then sleeps on a
 * futex until the next post.
 *
 * No CUDA headers: the driver's functions come in as pointers (cuGetProcAddress in
 * launcher.py), so this builds with a bare C compiler and links nothing but libc.
 */

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*cu_launch_kernel_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                   unsigned by, unsigned bz, unsigned shared, void *stream,
                                   void **kernel_params, void **extra);
typedef int (*cu_ctx_set_current_fn)(void *context);

/* One launch: 64 bytes, packed by launcher.py's RECORD ("=4Q8I"). */
struct launch_record {
    unsigned long long function;  /* CUfunction */
    unsigned long long stream;    /* CUstream; 0: the legacy null stream */
    unsigned long long params;    /* address of the argument bytes */
    unsigned long long size;      /* their length: exactly the function's argument size */
    unsigned int grid[3], block[3], shared;
    int result;                   /* written here: the launch's CUresult */
};

#define CU_LAUNCH_PARAM_END ((void *)0x00)
#define CU_LAUNCH_PARAM_BUFFER_POINTER ((void *)0x01)
#define CU_LAUNCH_PARAM_BUFFER_SIZE ((void *)0x02)
#define SPIN_NS 50000L /* after the last record: this long spinning before sleeping */

struct launcher {
    cu_launch_kernel_fn launch;
    cu_ctx_set_current_fn set_current;
    void *context;
    struct launch_record *records;
    unsigned capacity;            /* a power of two */
    unsigned posted;              /* records posted by the worker */
    unsigned done;                /* records launched by the thread */
    int errors;                   /* launches refused since the last kvmgpu_finish */
    int sleeping;                 /* the thread waits on `posted` */
    int stop;
    pthread_t thread;
};

static int launch_one(cu_launch_kernel_fn launch, const struct launch_record *r)
{
    unsigned long long size = r->size;
    void *extra[5] = {CU_LAUNCH_PARAM_BUFFER_POINTER, (void *)r->params,
                      CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
    return launch((void *)r->function, r->grid[0], r->grid[1], r->grid[2], r->block[0],
                  r->block[1], r->block[2], r->shared, (void *)r->stream, (void **)0,
                  size ? extra : (void **)0);
}

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *run(void *arg)
{
    struct launcher *l = arg;
    int context_error = l->set_current(l->context);
    unsigned done = l->done;
    for (;;) {
        unsigned posted = __atomic_load_n(&l->posted, __ATOMIC_ACQUIRE);
        if (done != posted) {
            struct launch_record *r = &l->records[done & (l->capacity - 1)];
            r->result = context_error ? context_error : launch_one(l->launch, r);
            if (r->result)
                __atomic_add_fetch(&l->errors, 1, __ATOMIC_RELAXED);
            __atomic_store_n(&l->done, ++done, __ATOMIC_RELEASE);
            continue;
        }
        if (__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE))
            return NULL;
        long until = now_ns() + SPIN_NS;
        int spins = 0;
        while (__atomic_load_n(&l->posted, __ATOMIC_ACQUIRE) == posted
               && !__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
            if ((++spins & 63) == 0 && now_ns() > until) {
                __atomic_store_n(&l->sleeping, 1, __ATOMIC_SEQ_CST);
                if (__atomic_load_n(&l->posted, __ATOMIC_SEQ_CST) == posted
                    && !__atomic_load_n(&l->stop, __ATOMIC_SEQ_CST))
                    syscall(SYS_futex, &l->posted, FUTEX_WAIT_PRIVATE, posted, NULL, NULL, 0);
                __atomic_store_n(&l->sleeping, 0, __ATOMIC_SEQ_CST);
                break;
            }
        }
    }
}

static void wake(struct launcher *l)
{
    if (__atomic_load_n(&l->sleeping, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &l->posted, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* A launcher thread for `context`, with a ring of `capacity` records (a power of two), or NULL. */
struct launcher *kvmgpu_open(void *launch_fn, void *set_current_fn, void *context,
                             unsigned capacity)
{
    if (capacity == 0 || (capacity & (capacity - 1)))
        return NULL;
    struct launcher *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->records = calloc(capacity, sizeof *l->records);
    if (!l->records) {
        free(l);
        return NULL;
    }
    l->launch = (cu_launch_kernel_fn)launch_fn;
    l->set_current = (cu_ctx_set_current_fn)set_current_fn;
    l->context = context;
    l->capacity = capacity;
    if (pthread_create(&l->thread, NULL, run, l)) {
        free(l->records);
        free(l);
        return NULL;
    }
    return l;
}

struct launch_record *kvmgpu_records(struct launcher *l)
{
    return l->records;
}

/* Records up to `posted` (a count since the start) may be launched. */
void kvmgpu_post(struct launcher *l, unsigned posted)
{
    __atomic_store_n(&l->posted, posted, __ATOMIC_SEQ_CST);
    wake(l);
}

/* Wait until every posted record is launched (or refused: its `result` says which); how many
 * were refused since the last call. */
int kvmgpu_finish(struct launcher *l)
{
    unsigned posted = __atomic_load_n(&l->posted, __ATOMIC_RELAXED);
    for (int spins = 0; __atomic_load_n(&l->done, __ATOMIC_ACQUIRE) != posted; spins++)
        if (spins > 4096)
            sched_yield(); /* a long run still in the driver: let others have the CPU */
    return __atomic_exchange_n(&l->errors, 0, __ATOMIC_RELAXED);
}

/* Stop the thread (after what is posted) and free everything. */
void kvmgpu_close(struct launcher *l)
{
    __atomic_store_n(&l->stop, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &l->posted, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    pthread_join(l->thread, NULL);
    free(l->records);
    free(l);
}

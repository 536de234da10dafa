/* kvmgpu: the worker's driver calls on the hot path, the one piece of the host written in C.
 *
 * A CPython extension module (kvmgpu.backend._launcher) with three functions that call the CUDA
 * driver through function pointers the cuda backend looked up (cuGetProcAddress): the launch loop
 * over packed records, one launch with its argument bytes read where they arrived, and a stream
 * synchronise; and one that compares bytes (count_repeats). Each call takes what the worker has
 * already validated in Python (function and stream handles from the VM's own tables, grid and
 * block against the device's limits, the argument size against the function's parameter table):
 * it reads no byte from the guest other than the argument bytes it hands to the driver, whose
 * size the worker checked and whose place it checks again here against the buffer they are in,
 * and the frames count_repeats compares, byte for byte, with one the worker has checked (it
 * interprets none of them).
 *
 * Why it exists (docs/performance.md, "The C launch loop"): a cuLaunchKernel costs less called
 * from C than through cuda-bindings, and a call through ctypes costs more than either; the worker
 * pays the difference on every forwarded launch and synchronise.
 *
 * No CUDA headers: the driver's functions come in as addresses, so this builds with a C compiler
 * and Python's headers and links nothing else.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "kvmgpu_wire.h"

typedef int (*cu_launch_kernel_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                   unsigned by, unsigned bz, unsigned shared, void *stream,
                                   void **kernel_params, void **extra);
typedef int (*cu_stream_synchronize_fn)(void *stream);
/* cuCtxSynchronize as CUDA 13's drivers give it (cuGetProcAddress at 13000: cuCtxSynchronize_v2,
 * which names the context); an older driver's takes no argument and ignores the one passed. */
typedef int (*cu_ctx_synchronize_fn)(void *ctx);

/* A launch and its repeats (struct kvmgpu_launch_record, from the op specification: launcher.py's
 * RECORD packs it): the record stands for `count` launches of the same function and shape whose
 * argument bytes lie `stride` bytes apart (a run of frames the worker found to repeat one it
 * validated). */

#define CU_LAUNCH_PARAM_END ((void *)0x00)
#define CU_LAUNCH_PARAM_BUFFER_POINTER ((void *)0x01)
#define CU_LAUNCH_PARAM_BUFFER_SIZE ((void *)0x02)

static int call_launch(cu_launch_kernel_fn launch, void *function, const unsigned *shape,
                       unsigned shared, void *stream, void *params, unsigned long long size)
{
    void *extra[5] = {CU_LAUNCH_PARAM_BUFFER_POINTER, params, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
                      CU_LAUNCH_PARAM_END};
    return launch(function, shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shared,
                  stream, (void **)0, size ? extra : (void **)0);
}

/* An address: a Python int (0 is NULL) or None (NULL); anything else with __int__ (a
 * cuda-bindings handle) is taken through int(). */
static int as_address(PyObject *o, void **out)
{
    if (o == Py_None) {
        *out = NULL;
        return 0;
    }
    if (PyLong_Check(o)) {
        *out = PyLong_AsVoidPtr(o);
    } else {
        PyObject *n = PyNumber_Long(o);
        if (n == NULL)
            return -1;
        *out = PyLong_AsVoidPtr(n);
        Py_DECREF(n);
    }
    return (*out == NULL && PyErr_Occurred()) ? -1 : 0;
}

/* A driver function's address: as_address, and never NULL. */
static int as_function(PyObject *o, const char *name, void **out)
{
    if (as_address(o, out) < 0)
        return -1;
    if (*out == NULL) {
        PyErr_Format(PyExc_ValueError, "no %s", name);
        return -1;
    }
    return 0;
}

static int as_uint(PyObject *o, unsigned *out)
{
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > UINT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "launch dimension over 2**32 - 1");
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* 0 where `nargs` is `want`; else -1 with a TypeError naming the call. */
static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
    return -1;
}

/* args[0:n] as Py_ssize_t in out[0:n]; -1 with the exception set where one is no such int. */
static int as_ssizes(PyObject *const *args, int n, Py_ssize_t *out)
{
    for (int k = 0; k < n; k++) {
        out[k] = PyLong_AsSsize_t(args[k]);
        if (out[k] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

PyDoc_STRVAR(launch_records_doc,
"launch_records(launch_fn, records, first, count, skip) -> (record, repeat, error)\n\n"
"Launch records[first:first + count] (a writable buffer of 72-byte records, each standing for\n"
"`count` launches) in order with the cuLaunchKernel at address launch_fn, leaving out the first\n"
"`skip` launches of records[first], and stop at the first launch the driver refuses: where it\n"
"is (its record and its place among that record's launches) and its CUresult; (first + count,\n"
"0, 0) when all went.");

static PyObject *launch_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    void *fn;
    Py_ssize_t v[3];
    if (check_nargs("launch_records", nargs, 5) < 0 || as_function(args[0], "cuLaunchKernel", &fn) < 0
        || as_ssizes(args + 2, 3, v) < 0)
        return NULL;
    Py_ssize_t first = v[0], count = v[1], skip = v[2];
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    Py_ssize_t have = view.len / (Py_ssize_t)sizeof(struct kvmgpu_launch_record);
    if (first < 0 || count < 0 || skip < 0 || first > have || count > have - first) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "records %zd..%zd of a buffer of %zd", first,
                     first + count, have);
        return NULL;
    }
    const struct kvmgpu_launch_record *r = (const struct kvmgpu_launch_record *)view.buf + first;
    cu_launch_kernel_fn launch = (cu_launch_kernel_fn)fn;
    Py_ssize_t i;
    unsigned long long j = 0;
    int err = 0;
    for (i = first; i < first + count; i++, r++) {
        unsigned shape[6] = {r->grid[0], r->grid[1], r->grid[2], r->block[0], r->block[1],
                             r->block[2]};
        for (j = i == first ? (unsigned long long)skip : 0; j < r->count; j++) {
            err = call_launch(launch, (void *)(uintptr_t)r->function, shape, r->shared,
                              (void *)(uintptr_t)r->stream,
                              (void *)(uintptr_t)(r->params + j * r->stride), r->size);
            if (err)
                goto out;
        }
    }
    j = 0;
out:
    PyBuffer_Release(&view);
    return Py_BuildValue("(nKi)", i, j, err);
}

PyDoc_STRVAR(count_repeats_doc,
"count_repeats(buf, pos, size, head, skip_at, skip_len, limit) -> n\n\n"
"How many records of `size` bytes follow the one at buf[pos:pos + size], one after the other,\n"
"each whole inside `buf` and equal to it in its first `head` bytes except the `skip_len` bytes\n"
"at `skip_at` (at most `limit`). The worker's way of finding the frames that repeat a launch it\n"
"validated: they differ from it only in their sequence number and their argument bytes.");

static PyObject *count_repeats(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    Py_ssize_t v[6];
    if (check_nargs("count_repeats", nargs, 7) < 0 || as_ssizes(args + 1, 6, v) < 0)
        return NULL;
    Py_ssize_t pos = v[0], size = v[1], head = v[2], skip_at = v[3], skip_len = v[4], limit = v[5];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || head < 1 || size < head || skip_at < 0 || skip_len < 0
        || skip_at > head - skip_len || pos > view.len || size > view.len - pos || limit < 0) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "no record of %zd bytes (head %zd, skipping %zd at %zd) at %zd of a "
                     "buffer of %zd", size, head, skip_len, skip_at, pos, view.len);
        return NULL;
    }
    const char *b = (const char *)view.buf, *one = b + pos;
    Py_ssize_t after = skip_at + skip_len, n = 0, at = pos + size;
    while (n < limit && size <= view.len - at && memcmp(b + at, one, (size_t)skip_at) == 0
           && memcmp(b + at + after, one + after, (size_t)(head - after)) == 0) {
        n++;
        at += size;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(launch_doc,
"launch(launch_fn, function, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes) -> CUresult\n\n"
"One cuLaunchKernel (at address launch_fn) of `function` with buf[start:start + nbytes] as its\n"
"argument bytes (one packed buffer, CU_LAUNCH_PARAM_BUFFER_POINTER), read where they are: `buf`\n"
"is a bytearray; a range outside it raises ValueError and launches nothing. `stream`: None or 0\n"
"for the legacy null stream, else a CUstream (an int or a handle with __int__).");

static PyObject *launch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    void *fn, *function, *stream;
    unsigned shape[6], shared;
    if (check_nargs("launch", nargs, 13) < 0 || as_function(args[0], "cuLaunchKernel", &fn) < 0
        || as_address(args[1], &function) < 0)
        return NULL;
    for (int i = 0; i < 6; i++)
        if (as_uint(args[2 + i], &shape[i]) < 0)
            return NULL;
    if (as_uint(args[8], &shared) < 0 || as_address(args[9], &stream) < 0)
        return NULL;
    PyObject *buf = args[10];
    if (!PyByteArray_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "the argument bytes must be in a bytearray");
        return NULL;
    }
    Py_ssize_t v[2];
    if (as_ssizes(args + 11, 2, v) < 0)
        return NULL;
    Py_ssize_t start = v[0], nbytes = v[1];
    Py_ssize_t len = PyByteArray_GET_SIZE(buf);
    if (start < 0 || nbytes < 0 || start > len || nbytes > len - start) {
        PyErr_Format(PyExc_ValueError, "argument bytes %zd..%zd outside a buffer of %zd", start,
                     start + nbytes, len);
        return NULL;
    }
    int err = call_launch((cu_launch_kernel_fn)fn, function, shape, shared, stream,
                          PyByteArray_AS_STRING(buf) + start, (unsigned long long)nbytes);
    return PyLong_FromLong(err);
}

PyDoc_STRVAR(synchronize_doc,
"stream_synchronize(sync_fn, stream) -> CUresult\n\n"
"cuStreamSynchronize (at address sync_fn) on `stream` (None or 0: the legacy null stream), with\n"
"the GIL released while it waits.");

static PyObject *stream_synchronize(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    void *fn, *stream;
    if (check_nargs("stream_synchronize", nargs, 2) < 0
        || as_function(args[0], "cuStreamSynchronize", &fn) < 0 || as_address(args[1], &stream) < 0)
        return NULL;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = ((cu_stream_synchronize_fn)fn)(stream);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(err);
}

/* The mailbox (kvmgpu_wire/mailbox.py; its layout from the op specification) */
#define BOX_REQUEST_MAX KVMGPU_MAILBOX_REQUEST_MAX
#define BOX_REPLY_AT (KVMGPU_MAILBOX_HEAD + KVMGPU_MAILBOX_REQUEST_MAX)
#define SEQ_AT ((Py_ssize_t)offsetof(struct kvmgpu_frame_header, seq))

enum { TURN_IDLE, TURN_OTHER, TURN_DEADLINE, TURN_LAUNCH_FAILED, TURN_SYNC_FAILED, TURN_RING };

static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double monotonic(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned read_u32(const unsigned char *p)
{
    unsigned v;
    memcpy(&v, p, 4);
    return v;
}

PyDoc_STRVAR(serve_repeats_doc,
"serve_repeats(box, number, template, fixed, launch_size, launch_fn, function, shape, stream,\n"
"              sync_fn, on_stream, sync_stream, reply, deadline, idle_s, turn_s)\n"
"    -> (why, served, number, seq, wait_seq, err, clocked)\n\n"
"Serve, while they come, the posts to one session's mailbox (`box`, its KVMGPU_MAILBOX_BYTES, the\n"
"host's last post taken `number`) that repeat a launch + synchronise the worker checked and\n"
"served: `template`, the whole message, whose bytes each post must equal but for the launch's\n"
"sequence number, its argument bytes (template[fixed:launch_size]) and the synchronise's sequence\n"
"number. Each one is copied out of the mailbox, compared, launched (cuLaunchKernel at launch_fn:\n"
"`function`, `shape` (grid x y z, block x y z, shared), `stream`, its argument bytes from the\n"
"copy), synchronised (sync_fn: cuStreamSynchronize on `sync_stream` where `on_stream` is true,\n"
"else cuCtxSynchronize of the context `sync_stream`) and answered with `reply` (its sequence number set). The GIL is\n"
"released throughout. Returns why it stopped: IDLE (nothing posted for idle_s, or turn_s spent),\n"
"OTHER (a post that is no repeat: left for the worker), DEADLINE (a repeat posted at or after\n"
"`deadline`, CLOCK_MONOTONIC seconds: left for the worker), LAUNCH_FAILED or SYNC_FAILED (that\n"
"post taken, not answered: `seq`, `wait_seq`, the driver's `err`), RING (the guest said it\n"
"sleeps: ring it); with the posts served, the last number taken and the seconds from each\n"
"launch to its synchronise's return, summed (the compute meter's clock-timed runs).");

static PyObject *serve_repeats(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    void *launch_fn, *function, *stream, *sync_fn, *sync_stream;
    unsigned shape[7], number;
    Py_ssize_t v[2];
    int on_stream;
    if (check_nargs("serve_repeats", nargs, 16) < 0 || as_function(args[5], "cuLaunchKernel", &launch_fn) < 0
        || as_address(args[6], &function) < 0 || as_address(args[8], &stream) < 0
        || as_function(args[9], "the synchronise", &sync_fn) < 0 || (on_stream = PyObject_IsTrue(args[10])) < 0
        || as_address(args[11], &sync_stream) < 0
        || as_uint(args[1], &number) < 0 || as_ssizes(args + 3, 2, v) < 0)
        return NULL;
    if (!PyTuple_Check(args[7]) || PyTuple_GET_SIZE(args[7]) != 7) {
        PyErr_SetString(PyExc_TypeError, "shape: a tuple (gx, gy, gz, bx, by, bz, shared)");
        return NULL;
    }
    for (int i = 0; i < 7; i++)
        if (as_uint(PyTuple_GET_ITEM(args[7], i), &shape[i]) < 0)
            return NULL;
    double deadline = PyFloat_AsDouble(args[13]), idle_s = PyFloat_AsDouble(args[14]),
           turn_s = PyFloat_AsDouble(args[15]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t fixed = v[0], launch_size = v[1];
    Py_buffer box, tmpl, reply;
    if (PyObject_GetBuffer(args[0], &box, PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &tmpl, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&box);
        return NULL;
    }
    if (PyObject_GetBuffer(args[12], &reply, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&tmpl);
        PyBuffer_Release(&box);
        return NULL;
    }
    Py_ssize_t size = tmpl.len;
    if (box.len != KVMGPU_MAILBOX_BYTES || ((uintptr_t)box.buf & 3) || size > BOX_REQUEST_MAX
        || fixed < SEQ_AT + 4 || launch_size < fixed || launch_size > size - SEQ_AT - 4
        || reply.len < SEQ_AT + 4 || reply.len > KVMGPU_MAILBOX_BYTES - BOX_REPLY_AT) {
        PyBuffer_Release(&reply);
        PyBuffer_Release(&tmpl);
        PyBuffer_Release(&box);
        PyErr_SetString(PyExc_ValueError, "serve_repeats: a mailbox, template or reply of the wrong size");
        return NULL;
    }
    unsigned *words = box.buf;
    unsigned char *request = (unsigned char *)box.buf + KVMGPU_MAILBOX_HEAD,
                  *answer = (unsigned char *)box.buf + BOX_REPLY_AT;
    const unsigned char *t = tmpl.buf;
    unsigned char copy[BOX_REQUEST_MAX];
    unsigned long long nbytes = (unsigned long long)(launch_size - fixed);
    Py_ssize_t wait_at = launch_size;
    int why = TURN_IDLE, err = 0;
    unsigned seq = 0, wait_seq = 0;
    Py_ssize_t served = 0;
    double clocked = 0;

    Py_BEGIN_ALLOW_THREADS
    double start = monotonic(), last = start;
    for (;;) {
        unsigned post = __atomic_load_n(&words[KVMGPU_MAILBOX_POST], __ATOMIC_ACQUIRE);
        if (post == number) {
            double now = monotonic();
            if (now - last >= idle_s || now - start >= turn_s)
                break;
            spin_pause();
            continue;
        }
        /* A post: copied out before anything looks at it (the guest may go on writing). */
        if (__atomic_load_n(&words[KVMGPU_MAILBOX_SIZE], __ATOMIC_RELAXED) != (unsigned)size) {
            why = TURN_OTHER;
            break;
        }
        memcpy(copy, request, (size_t)size);
        if (memcmp(copy, t, SEQ_AT) != 0 || memcmp(copy + SEQ_AT + 4, t + SEQ_AT + 4, (size_t)(fixed - SEQ_AT - 4)) != 0
            || memcmp(copy + wait_at, t + wait_at, SEQ_AT) != 0
            || memcmp(copy + wait_at + SEQ_AT + 4, t + wait_at + SEQ_AT + 4, (size_t)(size - wait_at - SEQ_AT - 4)) != 0) {
            why = TURN_OTHER;
            break;
        }
        double t0 = monotonic();
        if (t0 >= deadline) {
            why = TURN_DEADLINE;
            break;
        }
        number = post;
        seq = read_u32(copy + SEQ_AT);
        wait_seq = read_u32(copy + wait_at + SEQ_AT);
        err = call_launch((cu_launch_kernel_fn)launch_fn, function, shape, shape[6], stream, copy + fixed, nbytes);
        if (err) {
            why = TURN_LAUNCH_FAILED;
            break;
        }
        err = on_stream ? ((cu_stream_synchronize_fn)sync_fn)(sync_stream) : ((cu_ctx_synchronize_fn)sync_fn)(sync_stream);
        last = monotonic();
        clocked += last - t0;
        if (err) {
            why = TURN_SYNC_FAILED;
            break;
        }
        memcpy(answer, reply.buf, (size_t)reply.len);
        memcpy(answer + SEQ_AT, &wait_seq, 4);
        __atomic_store_n(&words[KVMGPU_MAILBOX_LENGTH], (unsigned)reply.len, __ATOMIC_RELAXED);
        __atomic_store_n(&words[KVMGPU_MAILBOX_ANSWER], number, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the answer, then the guest's word (mailbox.py) */
        served++;
        if (__atomic_load_n(&words[KVMGPU_MAILBOX_ASLEEP], __ATOMIC_ACQUIRE) == 1) {
            why = TURN_RING;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&reply);
    PyBuffer_Release(&tmpl);
    PyBuffer_Release(&box);
    return Py_BuildValue("(inIIIid)", why, served, number, seq, wait_seq, err, clocked);
}

static PyMethodDef methods[] = {
    {"launch_records", (PyCFunction)(void (*)(void))launch_records, METH_FASTCALL,
     launch_records_doc},
    {"count_repeats", (PyCFunction)(void (*)(void))count_repeats, METH_FASTCALL,
     count_repeats_doc},
    {"launch", (PyCFunction)(void (*)(void))launch, METH_FASTCALL, launch_doc},
    {"stream_synchronize", (PyCFunction)(void (*)(void))stream_synchronize, METH_FASTCALL,
     synchronize_doc},
    {"serve_repeats", (PyCFunction)(void (*)(void))serve_repeats, METH_FASTCALL, serve_repeats_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_launcher",
    "The worker's driver calls on the hot path, in C (kvmgpu/backend/launcher.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__launcher(void)
{
    return PyModule_Create(&module);
}

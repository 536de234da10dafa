/* The copier (guest-agent/include/kvmgpu_copier.h, which says why it exists; the guest's
 * libcuda.so.1 copies through it) as a Python module `_copier`, for its tests alone
 * (tests/guest/test_copier.py builds it; tests/native/test_sanitizers.py with the sanitizers). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "kvmgpu_copier.h"

PyDoc_STRVAR(copy_doc,
"copy(dst, src, size, piece)\n--\n\n"
"memcpy(dst, src, size) (addresses of this process), in `piece`-byte pieces taken by this thread\n"
"and the helpers (from two pieces up; one thread below that or while another copy runs).\n"
"The GIL is released meanwhile.");

static PyObject *copy(PyObject *self, PyObject *args)
{
    unsigned long long dst, src;
    Py_ssize_t size, piece;
    if (!PyArg_ParseTuple(args, "KKnn:copy", &dst, &src, &size, &piece))
        return NULL;
    if (size < 0 || piece <= 0) {
        PyErr_Format(PyExc_ValueError, "copy: size %zd and piece %zd (size >= 0, piece > 0)", size,
                     piece);
        return NULL;
    }
    if (size && (!dst || !src)) {
        PyErr_SetString(PyExc_ValueError, "copy: a null address");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    kvmgpu_split_copy((char *)(uintptr_t)dst, (const char *)(uintptr_t)src, (size_t)size, (size_t)piece);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(configure_doc,
"configure(helpers, spin_us)\n--\n\n"
"How many helper threads take part in a copy (0 to 15; started at the first copy that needs\n"
"them), and how long each spins for the next copy before it sleeps.");

static PyObject *configure(PyObject *self, PyObject *args)
{
    int helpers;
    long spin_us;
    if (!PyArg_ParseTuple(args, "il:configure", &helpers, &spin_us))
        return NULL;
    if (helpers < 0 || helpers > MAX_HELPERS || spin_us < 0 || spin_us > 1000000) {
        PyErr_Format(PyExc_ValueError,
                     "configure: %d helpers and %ld us of spin (0-%d helpers, 0-1000000 us)",
                     helpers, spin_us, MAX_HELPERS);
        return NULL;
    }
    kvmgpu_copier_configure(helpers, spin_us);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(started_doc, "started()\n--\n\nHow many helper threads run in this process.");

static PyObject *started(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(kvmgpu_copier_started());
}

static PyMethodDef methods[] = {
    {"copy", copy, METH_VARARGS, copy_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"started", started, METH_NOARGS, started_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_copier",
    "A memcpy shared by the calling thread and helper threads (kvmgpu_guest/copier.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__copier(void)
{
    kvmgpu_copier_configure(0, 200);
    return PyModule_Create(&module);
}

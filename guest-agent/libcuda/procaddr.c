/* cuGetErrorName / cuGetErrorString (kvmgpu_cuda.h's table) and cuGetProcAddress, which resolves
 * a name as the driver does: of the exported variants of that name, the newest one the caller's
 * CUDA version knows, the per-thread default stream one (_ptds / _ptsz) where the caller asks for
 * it. A driver function it does not forward is a stub that says so once when called; any other
 * name is CUDA_ERROR_NOT_FOUND (see "what is not forwarded" below). */
#define _GNU_SOURCE
#include "export.h"
#include "driver_names.h"
#include "exports.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Only their addresses are taken here: each is defined, with its prototype, where it belongs. */
#define DECLARE(name, symbol, version, ptds) CUresult symbol();
KVMGPU_EXPORTS(DECLARE)

struct entry {
    const char *name;
    void *fn;
    int version;
    int ptds;
};

#define ENTRY(name, symbol, version, ptds) {name, (void *)symbol, version, ptds},
static const struct entry entries[] = {KVMGPU_EXPORTS(ENTRY)};

static const struct kvmgpu_cuda_result_name *result_name(CUresult error)
{
    size_t lo = 0, hi = sizeof kvmgpu_cuda_results / sizeof kvmgpu_cuda_results[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (kvmgpu_cuda_results[mid].code == error)
            return &kvmgpu_cuda_results[mid];
        if (kvmgpu_cuda_results[mid].code < error)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

CUAPI CUresult cuGetErrorName(CUresult error, const char **text)
{
    const struct kvmgpu_cuda_result_name *r = result_name(error);
    if (!text)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    *text = r ? r->name : NULL;
    return r ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_INVALID_VALUE;
}

CUAPI CUresult cuGetErrorString(CUresult error, const char **text)
{
    const struct kvmgpu_cuda_result_name *r = result_name(error);
    if (!text)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    *text = r ? r->text : NULL;
    return r ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_INVALID_VALUE;
}

static const char *const driver_names[] = {KVMGPU_DRIVER_NAMES};

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether `symbol` is a function of the driver API (driver_names.h). */
static int is_driver_function(const char *symbol)
{
    return bsearch(&symbol, driver_names, sizeof driver_names / sizeof driver_names[0], sizeof driver_names[0],
                   by_name) != NULL;
}

/* --- what is not forwarded ----------------------------------------------------------------------
 * The runtime looks up every driver function it might use when it starts, and fails to start
 * (cudaErrorCallRequiresNewerDriver) where one it counts on is missing. So a driver API name
 * ("cu...") this library does not forward resolves to a stub of its own: calling it logs the name
 * once and is CUDA_ERROR_NOT_SUPPORTED, as a feature a VM is not given. Other names (not in
 * driver_names.h) are CUDA_ERROR_NOT_FOUND, logged once, as the driver has no such function. */

#define STUBS_MAX 1024 /* distinct names; past them a name is NOT_FOUND */
static pthread_mutex_t stubs_lock = PTHREAD_MUTEX_INITIALIZER;
static char *stub_name[STUBS_MAX];
static int stub_called[STUBS_MAX];
static int nstubs;

static CUresult not_forwarded(int i)
{
    pthread_mutex_lock(&stubs_lock);
    int first = !stub_called[i]++;
    pthread_mutex_unlock(&stubs_lock);
    if (first)
        kvmgpu_log("%s is not forwarded to the vGPU (CUDA_ERROR_NOT_SUPPORTED)", stub_name[i]);
    return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
}

/* STUBS_MAX functions stub_<10 binary digits>, each knowing its number. */
#define STUB(name, i)                      \
    static CUresult stub_##name(void)      \
    {                                      \
        return not_forwarded(i);           \
    }
#define TREE1(F, n, i) F(n##0, 2 * (i)) F(n##1, 2 * (i) + 1)
#define TREE2(F, n, i) TREE1(F, n##0, 2 * (i)) TREE1(F, n##1, 2 * (i) + 1)
#define TREE3(F, n, i) TREE2(F, n##0, 2 * (i)) TREE2(F, n##1, 2 * (i) + 1)
#define TREE4(F, n, i) TREE3(F, n##0, 2 * (i)) TREE3(F, n##1, 2 * (i) + 1)
#define TREE5(F, n, i) TREE4(F, n##0, 2 * (i)) TREE4(F, n##1, 2 * (i) + 1)
#define TREE6(F, n, i) TREE5(F, n##0, 2 * (i)) TREE5(F, n##1, 2 * (i) + 1)
#define TREE7(F, n, i) TREE6(F, n##0, 2 * (i)) TREE6(F, n##1, 2 * (i) + 1)
#define TREE8(F, n, i) TREE7(F, n##0, 2 * (i)) TREE7(F, n##1, 2 * (i) + 1)
#define TREE9(F, n, i) TREE8(F, n##0, 2 * (i)) TREE8(F, n##1, 2 * (i) + 1)
#define TREE10(F) TREE9(F, 0, 0) TREE9(F, 1, 1)
TREE10(STUB)
#define STUB_ADDRESS(name, i) (void *)stub_##name,
static void *const stubs[STUBS_MAX] = {TREE10(STUB_ADDRESS)};

/* The stub for `symbol` (the same one each time it is asked for), or NULL when they ran out. */
static void *stub_for(const char *symbol)
{
    void *fn = NULL;
    size_t len = strnlen(symbol, 256);
    pthread_mutex_lock(&stubs_lock);
    for (int i = 0; i < nstubs && !fn; i++)
        if (strlen(stub_name[i]) == len && !memcmp(stub_name[i], symbol, len))
            fn = stubs[i];
    if (!fn && nstubs < STUBS_MAX && (stub_name[nstubs] = malloc(len + 1)) != NULL) {
        memcpy(stub_name[nstubs], symbol, len);
        stub_name[nstubs][len] = '\0';
        fn = stubs[nstubs++];
    }
    pthread_mutex_unlock(&stubs_lock);
    return fn;
}

#define LOGGED_MAX 256
static char *logged[LOGGED_MAX];
static int nlogged;

/* Say once per name that a program asked for something that is not a driver function. A name
 * asked for with a CUDA version after the one driver_names.h is from is a newer CUDA's function
 * (cuda-bindings looks up every one it knows when it loads): the first is named, with a word for
 * the rest, which KVMGPU_LOG=trace names each. */
static void log_missing(const char *symbol, int cuda_version)
{
    static int newer_said;
    size_t len = strnlen(symbol, 256);
    int newer = cuda_version > KVMGPU_DRIVER_NAMES_VERSION, seen = 0;
    pthread_mutex_lock(&stubs_lock);
    if (newer) {
        seen = newer_said++;
    } else {
        for (int i = 0; i < nlogged && !seen; i++)
            seen = strlen(logged[i]) == len && !memcmp(logged[i], symbol, len);
        if (!seen && nlogged < LOGGED_MAX && (logged[nlogged] = malloc(len + 1)) != NULL) {
            memcpy(logged[nlogged], symbol, len);
            logged[nlogged++][len] = '\0';
        }
    }
    pthread_mutex_unlock(&stubs_lock);
    if (!seen && newer)
        kvmgpu_log("cuGetProcAddress: %.256s (CUDA %d.%d) and any other function newer than CUDA %d.%d are not here "
                   "(CUDA_ERROR_NOT_FOUND; KVMGPU_LOG=trace names each)", symbol, cuda_version / 1000,
                   cuda_version % 1000 / 10, KVMGPU_DRIVER_NAMES_VERSION / 1000, KVMGPU_DRIVER_NAMES_VERSION % 1000 / 10);
    else if (!seen)
        kvmgpu_log("cuGetProcAddress: %.256s is not a driver function (CUDA_ERROR_NOT_FOUND)", symbol);
}

CUAPI CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags,
                                   CUdriverProcAddressQueryResult *status)
{
    if (!symbol || !pfn)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    const struct entry *best = NULL;
    int named = 0, ptds = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        const struct entry *e = &entries[i];
        if (strcmp(e->name, symbol) != 0)
            continue;
        named = 1;
        if (e->version > cuda_version || (e->ptds && !ptds))
            continue;
        /* the per-thread variant where asked for, else the newest */
        if (!best || (e->ptds && !best->ptds) || (e->ptds == best->ptds && e->version > best->version))
            best = e;
    }
    void *fn = best ? best->fn : NULL;
    if (!named && is_driver_function(symbol))
        fn = stub_for(symbol);
    if (kvmgpu_tracing())
        kvmgpu_log("cuGetProcAddress(%.256s, %d, %llu): %s", symbol, cuda_version, (unsigned long long)flags,
                   best ? "forwarded" : named ? "too new" : fn ? "not forwarded (a stub)" : "not found");
    *pfn = fn;
    if (status)
        *status = fn ? CU_GET_PROC_ADDRESS_SUCCESS
                : named ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    if (!fn && !named && symbol[0]) /* (the runtime asks for "" when it starts) */
        log_missing(symbol, cuda_version);
    return fn ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_NOT_FOUND;
}

CUAPI CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags)
{
    return cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, NULL);
}

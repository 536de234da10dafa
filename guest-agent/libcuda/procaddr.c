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
 * ("cu...") this library does not forward resolves to its stub (unforwarded.c, the same one dlsym
 * finds): calling it logs the name once and is CUDA_ERROR_NOT_SUPPORTED, as a feature a VM is not
 * given. Other names (not in driver_names.h) are CUDA_ERROR_NOT_FOUND, logged once, as the driver
 * has no such function. */

static pthread_mutex_t logged_lock = PTHREAD_MUTEX_INITIALIZER;

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
    pthread_mutex_lock(&logged_lock);
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
    pthread_mutex_unlock(&logged_lock);
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
        fn = kvmgpu_unforwarded(symbol);
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

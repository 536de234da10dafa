/* cuGetErrorName / cuGetErrorString (kvmgpu_cuda.h's table) and cuGetProcAddress, which resolves
 * a name as the driver does: of the exported variants of that name, the newest one the caller's
 * CUDA version knows, the per-thread default stream one (_ptds / _ptsz) where the caller asks for
 * it. A name the library does not have is logged once and is CUDA_ERROR_NOT_FOUND. */
#define _GNU_SOURCE
#include "api.h"
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

#define LOGGED_MAX 256
static pthread_mutex_t logged_lock = PTHREAD_MUTEX_INITIALIZER;
static char *logged[LOGGED_MAX];
static int nlogged;

/* Say once per name that a program asked for something the library does not have. */
static void log_missing(const char *symbol)
{
    pthread_mutex_lock(&logged_lock);
    int seen = 0;
    for (int i = 0; i < nlogged && !seen; i++)
        seen = !strcmp(logged[i], symbol);
    if (!seen && nlogged < LOGGED_MAX) {
        char *copy = malloc(strnlen(symbol, 256) + 1);
        if (copy) {
            memcpy(copy, symbol, strnlen(symbol, 256));
            copy[strnlen(symbol, 256)] = '\0';
            logged[nlogged++] = copy;
        }
    }
    pthread_mutex_unlock(&logged_lock);
    if (!seen)
        kvmgpu_log("cuGetProcAddress: %.256s is not forwarded yet (CUDA_ERROR_NOT_FOUND)", symbol);
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
    *pfn = best ? best->fn : NULL;
    if (status)
        *status = best ? CU_GET_PROC_ADDRESS_SUCCESS
                : named ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    if (!named)
        log_missing(symbol);
    return best ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_NOT_FOUND;
}

CUAPI CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags)
{
    return cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, NULL);
}

/* Unified addressing in the guest: which pointers are device memory. The library keeps the
 * allocations it made (cuMemAlloc_v2 / cuMemFree_v2 tell it), so that cuMemcpy(Async) (what
 * cudaMemcpy with cudaMemcpyDefault calls) picks the direction, and cuPointerGetAttribute(s)
 * answers what the runtime asks about a pointer, without asking the host. */
#define _GNU_SOURCE
#include "api.h"

#include <pthread.h>
#include <string.h>

struct range {
    CUdeviceptr start;
    size_t size;
    unsigned long long id; /* CU_POINTER_ATTRIBUTE_BUFFER_ID */
};
static pthread_mutex_t ranges_lock = PTHREAD_MUTEX_INITIALIZER;
static struct range *ranges; /* sorted by start */
static size_t nranges, ranges_cap;
static unsigned long long next_id = 1;

/* The first range that starts after `p`. */
static size_t after(CUdeviceptr p)
{
    size_t lo = 0, hi = nranges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ranges[mid].start <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void kvmgpu_device_memory_add(CUdeviceptr start, size_t size)
{
    pthread_mutex_lock(&ranges_lock);
    struct range *grown = kvmgpu_grow(ranges, nranges, &ranges_cap, sizeof *ranges);
    if (!grown) { /* (unknown to cuMemcpy and cuPointerGetAttributes, no worse) */
        pthread_mutex_unlock(&ranges_lock);
        return;
    }
    ranges = grown;
    size_t i = after(start);
    memmove(&ranges[i + 1], &ranges[i], (nranges - i) * sizeof *ranges);
    ranges[i] = (struct range){start, size, next_id++};
    nranges++;
    pthread_mutex_unlock(&ranges_lock);
}

void kvmgpu_device_memory_remove(CUdeviceptr start)
{
    pthread_mutex_lock(&ranges_lock);
    size_t i = after(start);
    if (i > 0 && ranges[i - 1].start == start) {
        memmove(&ranges[i - 1], &ranges[i], (nranges - i) * sizeof *ranges);
        nranges--;
    }
    pthread_mutex_unlock(&ranges_lock);
}

/* Whether `p` lies in an allocation of this process; its range in `out`. */
static int device_range(CUdeviceptr p, struct range *out)
{
    pthread_mutex_lock(&ranges_lock);
    size_t i = after(p);
    int found = i > 0 && p - ranges[i - 1].start < ranges[i - 1].size;
    if (found && out)
        *out = ranges[i - 1];
    pthread_mutex_unlock(&ranges_lock);
    return found;
}

int kvmgpu_device_allocation(CUdeviceptr p, CUdeviceptr *start, size_t *size)
{
    struct range r;
    if (!device_range(p, &r))
        return 0;
    if (start)
        *start = r.start;
    if (size)
        *size = r.size;
    return 1;
}

/* The allocation `p` lies in (what the caching allocators of PyTorch and CuPy ask of a pointer). */
CUAPI CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    CUdeviceptr start;
    size_t n;
    if (!kvmgpu_device_allocation(p, &start, &n))
        return KVMGPU_CUDA_ERROR_NOT_FOUND;
    if (base)
        *base = start;
    if (size)
        *size = n;
    return KVMGPU_CUDA_SUCCESS;
}

/* --- cuMemcpy ---------------------------------------------------------------------------------- */

static CUresult copy(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream, int async)
{
    CUresult rc = kvmgpu_ready();
    if (rc || n == 0)
        return rc;
    int to_device = device_range(dst, NULL), from_device = device_range(src, NULL);
    if (to_device && from_device)
        return async ? cuMemcpyDtoDAsync_v2(dst, src, n, stream) : cuMemcpyDtoD_v2(dst, src, n);
    if (to_device)
        return async ? cuMemcpyHtoDAsync_v2(dst, (const void *)(uintptr_t)src, n, stream)
                     : cuMemcpyHtoD_v2(dst, (const void *)(uintptr_t)src, n);
    if (from_device)
        return async ? cuMemcpyDtoHAsync_v2((void *)(uintptr_t)dst, src, n, stream)
                     : cuMemcpyDtoH_v2((void *)(uintptr_t)dst, src, n);
    if (!dst || !src)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (async) { /* host to host, in stream order: after what the stream has queued */
        rc = cuStreamSynchronize(stream);
        if (rc)
            return rc;
    }
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return copy(dst, src, n, NULL, 0);
}

CUAPI CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return copy(dst, src, n, NULL, 0);
}

CUAPI CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream)
{
    return copy(dst, src, n, stream, 1);
}

CUAPI CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream)
{
    return copy(dst, src, n, stream, 1);
}

/* --- pointer attributes ------------------------------------------------------------------------ */

enum { /* CUpointer_attribute */
    P_CONTEXT = 1, P_MEMORY_TYPE, P_DEVICE_POINTER, P_HOST_POINTER, P_P2P_TOKENS, P_SYNC_MEMOPS, P_BUFFER_ID,
    P_IS_MANAGED, P_DEVICE_ORDINAL, P_IS_LEGACY_IPC, P_RANGE_START, P_RANGE_SIZE, P_MAPPED, P_HANDLE_TYPES,
    P_RDMA, P_ACCESS_FLAGS, P_MEMPOOL,
};
#define MEMORYTYPE_DEVICE 2
#define ACCESS_READWRITE 3 /* CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE */

/* One attribute of a device pointer into `data`; INVALID_VALUE for one not answered here. */
static CUresult attribute(int attr, void *data, CUdeviceptr p, const struct range *r)
{
    switch (attr) {
    case P_CONTEXT:
        return cuCtxGetCurrent((CUcontext *)data);
    case P_MEMORY_TYPE:
        *(unsigned int *)data = MEMORYTYPE_DEVICE;
        return KVMGPU_CUDA_SUCCESS;
    case P_DEVICE_POINTER:
        *(CUdeviceptr *)data = p;
        return KVMGPU_CUDA_SUCCESS;
    case P_HOST_POINTER:
        *(void **)data = NULL;
        return KVMGPU_CUDA_SUCCESS;
    case P_SYNC_MEMOPS:
    case P_IS_MANAGED:
    case P_IS_LEGACY_IPC:
    case P_RDMA:
        *(int *)data = 0; /* (a bool written as int: the driver's own width for these) */
        return KVMGPU_CUDA_SUCCESS;
    case P_MAPPED:
        *(int *)data = 1;
        return KVMGPU_CUDA_SUCCESS;
    case P_BUFFER_ID:
        *(unsigned long long *)data = r->id;
        return KVMGPU_CUDA_SUCCESS;
    case P_DEVICE_ORDINAL:
        *(int *)data = 0;
        return KVMGPU_CUDA_SUCCESS;
    case P_RANGE_START:
        *(CUdeviceptr *)data = r->start;
        return KVMGPU_CUDA_SUCCESS;
    case P_RANGE_SIZE:
        *(size_t *)data = r->size;
        return KVMGPU_CUDA_SUCCESS;
    case P_HANDLE_TYPES:
        *(unsigned long long *)data = 0;
        return KVMGPU_CUDA_SUCCESS;
    case P_ACCESS_FLAGS:
        *(unsigned int *)data = ACCESS_READWRITE;
        return KVMGPU_CUDA_SUCCESS;
    case P_MEMPOOL:
        *(void **)data = NULL;
        return KVMGPU_CUDA_SUCCESS;
    default:
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    }
}

CUAPI CUresult cuPointerGetAttribute(void *data, int attr, CUdeviceptr p)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!data)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct range r;
    if (!device_range(p, &r))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE; /* (what the driver says of memory it does not know) */
    return attribute(attr, data, p, &r);
}

/* The plural form does not fail on a pointer the driver does not know: its attributes are zero. */
CUAPI CUresult cuPointerGetAttributes(unsigned int n, int *attrs, void **data, CUdeviceptr p)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (n && (!attrs || !data))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct range r;
    int known = device_range(p, &r);
    for (unsigned int i = 0; i < n; i++) {
        if (!data[i])
            continue;
        if (attrs[i] < P_CONTEXT || attrs[i] > P_MEMPOOL)
            return KVMGPU_CUDA_ERROR_INVALID_VALUE;
        if (!known || attribute(attrs[i], data[i], p, &r) != KVMGPU_CUDA_SUCCESS) {
            size_t width = attrs[i] == P_P2P_TOKENS ? 16
                         : attrs[i] == P_MEMORY_TYPE || attrs[i] == P_ACCESS_FLAGS || attrs[i] == P_SYNC_MEMOPS ||
                                   attrs[i] == P_IS_MANAGED || attrs[i] == P_MAPPED || attrs[i] == P_IS_LEGACY_IPC ||
                                   attrs[i] == P_RDMA || attrs[i] == P_DEVICE_ORDINAL
                             ? sizeof(int)
                             : sizeof(void *);
            memset(data[i], 0, width);
        }
    }
    return KVMGPU_CUDA_SUCCESS;
}

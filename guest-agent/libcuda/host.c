/* Page-locked host memory. cuMemHostAlloc / cuMemAllocHost (cudaMallocHost, cudaHostAlloc) carve
 * it out of the session's window (client.c, kvmgpu_client_pin), which the host has registered with
 * the driver: copies from and to it are the GPU's DMA into guest memory, nothing copied in the
 * guest. Where the window cannot spare the bytes (it keeps half of its ring for other copies), it
 * is ordinary page-aligned guest memory, right but copied through the window as pageable memory
 * is. cuMemHostRegister (cudaHostRegister) keeps the program's memory where it is (copied through
 * the window). It cannot be mapped into the device's address space (CU_MEMHOSTALLOC_DEVICEMAP,
 * CU_MEMHOSTREGISTER_DEVICEMAP: CUDA_ERROR_NOT_SUPPORTED, said once). Only what these functions
 * handed out is freed by cuMemFreeHost. */
#define _GNU_SOURCE
#include "api.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define HOSTALLOC_FLAGS 0x7u /* PORTABLE | DEVICEMAP | WRITECOMBINED */
#define DEVICEMAP 0x2u
#define REGISTER_FLAGS 0xFu /* PORTABLE | DEVICEMAP | IOMEMORY | READ_ONLY */

struct host_block {
    void *p;
    size_t size;
    unsigned flags;
    int registered; /* the program's memory, registered: not ours to free */
    int in_window;  /* carved out of the session's window (kvmgpu_client_pin) */
    struct host_block *next;
};
static pthread_mutex_t host_lock = PTHREAD_MUTEX_INITIALIZER;
static struct host_block *blocks;

static CUresult mapped_refused(const char *call)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        kvmgpu_log("%s: mapped page-locked memory (DEVICEMAP) is not given to a VM yet (CUDA_ERROR_NOT_SUPPORTED)", call);
    return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
}

static CUresult remember(void *p, size_t size, unsigned flags, int registered, int in_window)
{
    struct host_block *b = malloc(sizeof *b);
    if (!b)
        return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    *b = (struct host_block){p, size, flags, registered, in_window, NULL};
    pthread_mutex_lock(&host_lock);
    b->next = blocks;
    blocks = b;
    pthread_mutex_unlock(&host_lock);
    return KVMGPU_CUDA_SUCCESS;
}

/* The block that starts at `p` (registered or not), taken off the list; NULL if none. */
static struct host_block *take(void *p, int registered)
{
    pthread_mutex_lock(&host_lock);
    struct host_block *found = NULL;
    for (struct host_block **b = &blocks; *b; b = &(*b)->next) {
        if ((*b)->p == p && (*b)->registered == registered) {
            found = *b;
            *b = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&host_lock);
    return found;
}

CUAPI CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0)
        rc = kvmgpu_capture_unsafe(); /* (a stream capture may forbid it) */
    if (rc)
        return rc;
    if (!pp || bytesize == 0 || (flags & ~HOSTALLOC_FLAGS))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (flags & DEVICEMAP)
        return mapped_refused("cuMemHostAlloc");
    void *p = kvmgpu_client_pin(&kvmgpu_session, bytesize);
    int in_window = p != NULL;
    if (!p && posix_memalign(&p, 4096, bytesize) != 0)
        return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    rc = remember(p, bytesize, flags, 0, in_window);
    if (rc) {
        if (in_window)
            kvmgpu_client_unpin(&kvmgpu_session, p);
        else
            free(p);
        return rc;
    }
    *pp = p;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    return cuMemHostAlloc(pp, bytesize, 0);
}

CUAPI CUresult cuMemFreeHost(void *p)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0)
        rc = kvmgpu_capture_unsafe(); /* (a stream capture may forbid it) */
    if (rc)
        return rc;
    struct host_block *b = take(p, 0);
    if (!b)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (b->in_window)
        kvmgpu_client_unpin(&kvmgpu_session, b->p);
    else
        free(b->p);
    free(b);
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuMemHostGetFlags(unsigned int *flags, void *p)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!flags)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&host_lock);
    for (struct host_block *b = blocks; b; b = b->next) {
        if (!b->registered && (uint8_t *)p >= (uint8_t *)b->p && (uint8_t *)p < (uint8_t *)b->p + b->size) {
            *flags = b->flags;
            rc = KVMGPU_CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&host_lock);
    return rc;
}

CUAPI CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!p || bytesize == 0 || (flags & ~REGISTER_FLAGS))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (flags & DEVICEMAP)
        return mapped_refused("cuMemHostRegister");
    return remember(p, bytesize, flags, 1, 0);
}

CUAPI CUresult cuMemHostUnregister(void *p)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    struct host_block *b = take(p, 1);
    if (!b)
        return KVMGPU_CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    free(b);
    return KVMGPU_CUDA_SUCCESS;
}

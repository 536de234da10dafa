/* Page-locked host memory. cuMemHostAlloc / cuMemAllocHost (cudaMallocHost, cudaHostAlloc) carve
 * it out of the session's window (client.c, kvmgpu_client_pin), which the host has registered with
 * the driver: copies from and to it are the GPU's DMA into guest memory, nothing copied in the
 * guest. Where the window cannot spare the bytes (it keeps half of its ring for other copies), it
 * is ordinary page-aligned guest memory, right but copied through the window as pageable memory
 * is. cuMemHostRegister (cudaHostRegister) keeps the program's memory where it is (copied through
 * the window). Mapped memory (CU_MEMHOSTALLOC_DEVICEMAP) is always carved out of the window, whose
 * device address the host gives (cuMemHostGetDevicePointer: that address plus the offset); where the
 * backend cannot map host memory (the sim), or for CU_MEMHOSTREGISTER_DEVICEMAP, it is
 * CUDA_ERROR_NOT_SUPPORTED, said once. Only what these functions
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

/* The device address of the session's window (asked once: the host registered its region
 * mapped); 0 with the reason logged once where the backend cannot map host memory (the sim). */
static uint64_t window_device(void)
{
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    static int asked;
    static uint64_t address;
    pthread_mutex_lock(&once);
    if (!asked) {
        struct kvmgpu_results_window_device_pointer out;
        asked = 1;
        if (kvmgpu_window_device_pointer(&kvmgpu_session, &out) == 0)
            address = out.address;
    }
    pthread_mutex_unlock(&once);
    return address;
}

/* Mapped page-locked memory: carved out of the window, where a kernel reaches it at the window's
 * device address plus its offset (cuMemHostGetDevicePointer). */
static CUresult mapped_alloc(void **pp, size_t bytesize, unsigned flags)
{
    if (!window_device())
        return mapped_refused("cuMemHostAlloc");
    void *p = kvmgpu_client_pin(&kvmgpu_session, bytesize);
    if (!p) {
        static int said;
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
            kvmgpu_log("cuMemHostAlloc: no room in the session's window for %zu bytes of mapped page-locked memory "
                       "(CUDA_ERROR_OUT_OF_MEMORY; `kvmgpu attach --region` gives the VM a bigger region)", bytesize);
        return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    }
    CUresult rc = remember(p, bytesize, flags, 0, 1);
    if (rc) {
        kvmgpu_client_unpin(&kvmgpu_session, p);
        return rc;
    }
    *pp = p;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!pdptr || !p || flags != 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    rc = KVMGPU_CUDA_ERROR_INVALID_VALUE; /* (not mapped page-locked memory of this library's) */
    pthread_mutex_lock(&host_lock);
    for (struct host_block *b = blocks; b; b = b->next) {
        if (b->in_window && (b->flags & DEVICEMAP) && (uint8_t *)p >= (uint8_t *)b->p &&
            (uint8_t *)p < (uint8_t *)b->p + b->size) {
            *pdptr = (CUdeviceptr)(window_device() + (uint64_t)((uint8_t *)p - kvmgpu_session.window));
            rc = KVMGPU_CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&host_lock);
    return rc;
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
        return mapped_alloc(pp, bytesize, flags);
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

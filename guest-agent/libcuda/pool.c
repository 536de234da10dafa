/* Stream-ordered allocation (cuMemAllocAsync / cuMemFreeAsync) and the device's default memory
 * pool. An allocation is made when asked for, by MEM_ALLOC, so it is charged to the VM's quota at
 * its real size as every other (an allocation made before the stream reaches the call is ready
 * when the stream does, which the stream order allows). A free is queued (MEM_FREE): the host
 * frees it after the work sent before it, and cuMemFree waits for the GPU's work, so the stream's
 * work that uses it is done. The pool keeps nothing back: freed memory goes back to the quota at
 * once, and so trimming has nothing to give; its attributes are kept, its use counted here. */
#include "api.h"

#include <pthread.h>

#define S (&kvmgpu_session)

struct CUmemPoolHandle_st {
    int unused;
};
static struct CUmemPoolHandle_st default_pool;

enum { /* CUmemPool_attribute */
    POOL_REUSE_FOLLOW_EVENT_DEPENDENCIES = 1, POOL_REUSE_ALLOW_OPPORTUNISTIC, POOL_REUSE_ALLOW_INTERNAL_DEPENDENCIES,
    POOL_RELEASE_THRESHOLD, POOL_RESERVED_MEM_CURRENT, POOL_RESERVED_MEM_HIGH, POOL_USED_MEM_CURRENT,
    POOL_USED_MEM_HIGH,
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static int reuse[3] = {1, 1, 1}; /* the driver's defaults */
static uint64_t release_threshold, used, used_high;

CUAPI CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!pool)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (dev != 0)
        return KVMGPU_CUDA_ERROR_INVALID_DEVICE;
    *pool = &default_pool;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    return cuDeviceGetDefaultMemPool(pool, dev);
}

CUAPI CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    if (dev != 0)
        return KVMGPU_CUDA_ERROR_INVALID_DEVICE;
    return pool == &default_pool ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_INVALID_VALUE; /* (no other pools) */
}

CUAPI CUresult cuMemPoolGetAttribute(CUmemoryPool pool, int attr, void *value)
{
    if (pool != &default_pool || !value)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = KVMGPU_CUDA_SUCCESS;
    pthread_mutex_lock(&pool_lock);
    switch (attr) {
    case POOL_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case POOL_REUSE_ALLOW_OPPORTUNISTIC:
    case POOL_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
        *(int *)value = reuse[attr - 1];
        break;
    case POOL_RELEASE_THRESHOLD:
        *(cuuint64_t *)value = release_threshold;
        break;
    case POOL_RESERVED_MEM_CURRENT: /* nothing is held back: what is reserved is what is used */
    case POOL_USED_MEM_CURRENT:
        *(cuuint64_t *)value = used;
        break;
    case POOL_RESERVED_MEM_HIGH:
    case POOL_USED_MEM_HIGH:
        *(cuuint64_t *)value = used_high;
        break;
    default:
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&pool_lock);
    return rc;
}

CUAPI CUresult cuMemPoolSetAttribute(CUmemoryPool pool, int attr, void *value)
{
    if (pool != &default_pool || !value)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = KVMGPU_CUDA_SUCCESS;
    pthread_mutex_lock(&pool_lock);
    switch (attr) {
    case POOL_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case POOL_REUSE_ALLOW_OPPORTUNISTIC:
    case POOL_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
        reuse[attr - 1] = *(int *)value;
        break;
    case POOL_RELEASE_THRESHOLD: /* kept and read back; the pool holds nothing back either way */
        release_threshold = *(cuuint64_t *)value;
        break;
    case POOL_RESERVED_MEM_HIGH:
    case POOL_USED_MEM_HIGH: /* only a reset to 0 (to the current use) */
        if (*(cuuint64_t *)value != 0)
            rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
        else
            used_high = used;
        break;
    default:
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&pool_lock);
    return rc;
}

CUAPI CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep)
{
    (void)keep;
    return pool == &default_pool ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_INVALID_VALUE;
}

CUAPI CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream stream)
{
    (void)stream;
    CUresult rc = cuMemAlloc_v2(dptr, bytesize); /* charged to the quota now */
    if (rc == 0) {
        pthread_mutex_lock(&pool_lock);
        used += bytesize;
        if (used > used_high)
            used_high = used;
        pthread_mutex_unlock(&pool_lock);
    }
    return rc;
}

CUAPI CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream stream)
{
    return cuMemAllocAsync(dptr, bytesize, stream);
}

CUAPI CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream stream)
{
    if (pool != &default_pool)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    return cuMemAllocAsync(dptr, bytesize, stream);
}

CUAPI CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream stream)
{
    return cuMemAllocFromPoolAsync(dptr, bytesize, pool, stream);
}

CUAPI CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream)
{
    (void)stream;
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    CUdeviceptr start;
    size_t size;
    if (!kvmgpu_device_allocation(dptr, &start, &size) || start != dptr)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    rc = kvmgpu_mem_free(S, dptr, 1); /* queued: after the work sent before it */
    if (rc == 0) {
        kvmgpu_device_memory_remove(dptr);
        pthread_mutex_lock(&pool_lock);
        used = used > size ? used - size : 0; /* (clamped: it may free what cuMemAlloc made) */
        pthread_mutex_unlock(&pool_lock);
    }
    return rc;
}

CUAPI CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream)
{
    return cuMemFreeAsync(dptr, stream);
}

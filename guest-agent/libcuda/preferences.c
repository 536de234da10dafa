/* Preferences the driver is free to ignore (CUDA's documentation says so of each): the cache and
 * shared-memory bank configurations. They are kept and read back, and change nothing on the host,
 * which is what a driver that cannot honour them does. */
#include "api.h"

#include <stdatomic.h>

#define CACHE_CONFIGS 4 /* CU_FUNC_CACHE_PREFER_NONE, _SHARED, _L1, _EQUAL */
#define BANK_SIZES 3    /* CU_SHARED_MEM_CONFIG_DEFAULT_BANK_SIZE, _FOUR_BYTE_, _EIGHT_BYTE_ */

typedef struct CUfunc_st *CUkernel;
static atomic_int cache_config, bank_size;

CUAPI CUresult cuCtxSetCacheConfig(int config)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0 && (config < 0 || config >= CACHE_CONFIGS))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        cache_config = config;
    return rc;
}

CUAPI CUresult cuCtxGetCacheConfig(int *config)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0 && !config)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        *config = cache_config;
    return rc;
}

CUAPI CUresult cuFuncSetCacheConfig(CUfunction f, int config)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0 && !f)
        rc = KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    if (rc == 0 && (config < 0 || config >= CACHE_CONFIGS))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    return rc;
}

CUAPI CUresult cuKernelSetCacheConfig(CUkernel kernel, int config, CUdevice dev)
{
    if (dev != 0)
        return KVMGPU_CUDA_ERROR_INVALID_DEVICE;
    return cuFuncSetCacheConfig(kernel, config);
}

CUAPI CUresult cuCtxSetSharedMemConfig(int config)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0 && (config < 0 || config >= BANK_SIZES))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        bank_size = config;
    return rc;
}

CUAPI CUresult cuCtxGetSharedMemConfig(int *config)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0 && !config)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        *config = bank_size;
    return rc;
}

CUAPI CUresult cuFuncSetSharedMemConfig(CUfunction f, int config)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0 && !f)
        rc = KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    if (rc == 0 && (config < 0 || config >= BANK_SIZES))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    return rc;
}

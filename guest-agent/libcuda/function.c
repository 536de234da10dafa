/* What a program asks of a kernel and of the context: attributes, occupancy, limits, and
 * cuLaunchKernelEx (tensor maps: tensormap.c).
 *
 * A kernel's attributes are fetched once (FUNC_GET_ATTRIBUTES: all sixteen in one call) and kept:
 * they change only by this process's own cuFuncSetAttribute, which is forwarded and then updates
 * the copy. cuBLAS, cuDNN and PyTorch ask them before launches, thousands of times a step.
 * Occupancy is forwarded, not computed here: the driver's answer depends on the kernel's
 * registers, its shared memory, the carveout and the architecture's allocation granularities,
 * which a guest-side formula would only approximate; each (kernel, block, shared memory, flags)
 * is asked once and kept, and cuOccupancyMaxPotentialBlockSize walks the block sizes over them.
 * A context's limits are asked once each; setting one to another value is refused, naming it:
 * the printf FIFO, the malloc heap and the stack are device memory outside the VM's quota. */
#include "api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define S (&kvmgpu_session)
#define FUNC_ATTRIBUTES 16
#define ATTR_MAX_THREADS_PER_BLOCK 0
#define ATTR_MAX_DYNAMIC_SHARED 8
#define LIMITS 7

/* --- function attributes ---------------------------------------------------------------------- */

struct attributes {
    uint64_t function;
    int32_t value[FUNC_ATTRIBUTES];
    int cluster_set; /* its required cluster dimensions were set by cuLaunchKernelEx (below) */
};

/* The kernels' attributes by handle: open addressing, at most half full (a handle is never 0,
 * which marks an empty slot). attributes_lock guards it; an entry moves when it grows. */
static pthread_mutex_t attributes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct attributes *known;
static size_t nknown, known_cap;

static size_t slot_of(uint64_t function, size_t n)
{
    return (size_t)((function * 0x9E3779B97F4A7C15ull) >> 32) & (n - 1);
}

static struct attributes *find(uint64_t function)
{
    if (!known_cap)
        return NULL;
    for (size_t i = slot_of(function, known_cap);; i = (i + 1) & (known_cap - 1)) {
        if (known[i].function == function)
            return &known[i];
        if (!known[i].function)
            return NULL;
    }
}

/* Keep a kernel's attributes (attributes_lock held); nothing where memory is short (asked again). */
static void keep(uint64_t function, const int32_t value[FUNC_ATTRIBUTES])
{
    if (find(function))
        return;
    if (2 * (nknown + 1) > known_cap) {
        size_t n = known_cap ? 2 * known_cap : 128;
        struct attributes *grown = calloc(n, sizeof *grown);
        if (!grown)
            return;
        for (size_t e = 0; e < known_cap; e++) {
            if (!known[e].function)
                continue;
            size_t i = slot_of(known[e].function, n);
            while (grown[i].function)
                i = (i + 1) & (n - 1);
            grown[i] = known[e];
        }
        free(known);
        known = grown;
        known_cap = n;
    }
    size_t i = slot_of(function, known_cap);
    while (known[i].function)
        i = (i + 1) & (known_cap - 1);
    known[i].function = function;
    known[i].cluster_set = 0;
    memcpy(known[i].value, value, sizeof known[i].value);
    nknown++;
}

/* The kernel's attributes, from the copy or from the host. */
static CUresult attributes_of(uint64_t function, int32_t value[FUNC_ATTRIBUTES])
{
    pthread_mutex_lock(&attributes_lock);
    struct attributes *a = find(function);
    if (a)
        memcpy(value, a->value, sizeof a->value);
    pthread_mutex_unlock(&attributes_lock);
    if (a)
        return KVMGPU_CUDA_SUCCESS;
    struct kvmgpu_results_func_get_attributes out;
    CUresult rc = kvmgpu_func_get_attributes(S, function, &out);
    if (rc)
        return rc;
    for (int i = 0; i < FUNC_ATTRIBUTES; i++) {
        uint32_t v = (uint32_t)(uint8_t)out.values[4 * i] | (uint32_t)(uint8_t)out.values[4 * i + 1] << 8 |
                     (uint32_t)(uint8_t)out.values[4 * i + 2] << 16 | (uint32_t)(uint8_t)out.values[4 * i + 3] << 24;
        value[i] = (int32_t)v;
    }
    pthread_mutex_lock(&attributes_lock);
    keep(function, value);
    pthread_mutex_unlock(&attributes_lock);
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuFuncGetAttribute(int *pi, int attrib, CUfunction f)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!pi || attrib < 0 || attrib >= FUNC_ATTRIBUTES)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!f)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    int32_t value[FUNC_ATTRIBUTES];
    rc = attributes_of((uint64_t)(uintptr_t)f, value);
    if (rc == 0)
        *pi = value[attrib];
    return rc;
}

CUAPI CUresult cuFuncSetAttribute(CUfunction f, int attrib, int value)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (attrib < 0 || attrib >= FUNC_ATTRIBUTES)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!f)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    uint64_t function = (uint64_t)(uintptr_t)f;
    int32_t values[FUNC_ATTRIBUTES];
    rc = attributes_of(function, values); /* (kept first, so that the update below has a copy to change) */
    if (rc)
        return rc;
    if (values[attrib] == value)
        return KVMGPU_CUDA_SUCCESS; /* PyTorch sets the same limit before every launch of some kernels */
    if (value < 0) /* (the carveout's default, -1, is what a kernel has until it is set) */
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    rc = kvmgpu_func_set_attribute(S, function, (uint64_t)attrib, (uint64_t)(uint32_t)value & 0xFFFFFFFFu);
    if (rc == 0) {
        pthread_mutex_lock(&attributes_lock);
        struct attributes *a = find(function);
        if (a)
            a->value[attrib] = value;
        pthread_mutex_unlock(&attributes_lock);
    }
    return rc;
}

/* A CUkernel is the function of its library's module (library.c); the device is the VM's one. */
CUAPI CUresult cuKernelGetAttribute(int *pi, int attrib, CUfunction kernel, CUdevice dev)
{
    if (dev != 0)
        return KVMGPU_CUDA_ERROR_INVALID_DEVICE;
    return cuFuncGetAttribute(pi, attrib, kernel);
}

CUAPI CUresult cuKernelSetAttribute(int attrib, int value, CUfunction kernel, CUdevice dev)
{
    if (dev != 0)
        return KVMGPU_CUDA_ERROR_INVALID_DEVICE;
    return cuFuncSetAttribute(kernel, attrib, value);
}

CUAPI CUresult cuFuncGetName(const char **name, CUfunction f)
{
    if (!name)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!f)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    *name = kvmgpu_function_name((uint64_t)(uintptr_t)f);
    return *name ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_INVALID_HANDLE;
}

CUAPI CUresult cuKernelGetName(const char **name, CUfunction kernel)
{
    return cuFuncGetName(name, kernel);
}

/* --- occupancy --------------------------------------------------------------------------------- */

#define OCCUPANCY_SLOTS 1024 /* answers kept, by hash: a bounded table, an old answer overwritten */

struct occupancy {
    uint64_t function, shared;
    uint32_t block, flags;
    int32_t blocks;
    int valid;
};

static pthread_mutex_t occupancy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct occupancy occupancy[OCCUPANCY_SLOTS];

static CUresult max_blocks(int *blocks, CUfunction f, int block, size_t shared, unsigned flags)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!blocks || block <= 0 || flags & ~1u)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!f)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    uint64_t function = (uint64_t)(uintptr_t)f;
    size_t slot = (size_t)((function * 0x9E3779B97F4A7C15ull ^ (uint64_t)block * 31 ^ shared * 131 ^ flags) %
                           OCCUPANCY_SLOTS);
    pthread_mutex_lock(&occupancy_lock);
    struct occupancy o = occupancy[slot];
    pthread_mutex_unlock(&occupancy_lock);
    if (o.valid && o.function == function && o.block == (uint32_t)block && o.shared == shared && o.flags == flags) {
        *blocks = o.blocks;
        return KVMGPU_CUDA_SUCCESS;
    }
    struct kvmgpu_results_occupancy_max_blocks out;
    rc = kvmgpu_occupancy_max_blocks(S, function, (uint64_t)block, (uint64_t)shared, flags, &out);
    if (rc)
        return rc;
    pthread_mutex_lock(&occupancy_lock);
    occupancy[slot] = (struct occupancy){function, shared, (uint32_t)block, flags, out.blocks, 1};
    pthread_mutex_unlock(&occupancy_lock);
    *blocks = out.blocks;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, CUfunction f, int block, size_t shared)
{
    return max_blocks(blocks, f, block, shared, 0);
}

CUAPI CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *blocks, CUfunction f, int block,
                                                                    size_t shared, unsigned int flags)
{
    return max_blocks(blocks, f, block, shared, flags);
}

/* The block size with the most threads resident a multiprocessor (the largest such, as the
 * driver's and cuda_occupancy.h's search: from the largest block down, a warp at a time). */
static CUresult potential_block_size(int *min_grid, int *block_size, CUfunction f, CUoccupancyB2DSize shared_of,
                                     size_t shared, int limit, unsigned flags)
{
    if (!min_grid || !block_size)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    int32_t attrs[FUNC_ATTRIBUTES];
    CUresult rc = kvmgpu_initialised();
    if (rc == 0)
        rc = f ? attributes_of((uint64_t)(uintptr_t)f, attrs) : KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    if (rc)
        return rc;
    int warp = 32, per_sm = 2048, sms = 1, device_max = 1024;
    cuDeviceGetAttribute(&warp, 10, 0);       /* WARP_SIZE */
    cuDeviceGetAttribute(&per_sm, 39, 0);     /* MAX_THREADS_PER_MULTIPROCESSOR */
    cuDeviceGetAttribute(&sms, 16, 0);        /* MULTIPROCESSOR_COUNT */
    cuDeviceGetAttribute(&device_max, 1, 0);  /* MAX_THREADS_PER_BLOCK */
    int top = attrs[ATTR_MAX_THREADS_PER_BLOCK] < device_max ? attrs[ATTR_MAX_THREADS_PER_BLOCK] : device_max;
    if (limit > 0 && limit < top)
        top = limit;
    if (warp <= 0 || top <= 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    int best_threads = 0, best_block = 0, best_blocks = 0;
    for (int b = (top + warp - 1) / warp * warp; b > 0; b -= warp) {
        int block = b < top ? b : top;
        int blocks = 0;
        rc = max_blocks(&blocks, f, block, shared_of ? shared_of(block) : shared, flags);
        if (rc)
            return rc;
        if (blocks * block > best_threads) {
            best_threads = blocks * block;
            best_block = block;
            best_blocks = blocks;
        }
        if (best_threads >= per_sm)
            break;
    }
    *min_grid = best_blocks * sms;
    *block_size = best_block;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuOccupancyMaxPotentialBlockSize(int *min_grid, int *block_size, CUfunction f,
                                                CUoccupancyB2DSize shared_of, size_t shared, int limit)
{
    return potential_block_size(min_grid, block_size, f, shared_of, shared, limit, 0);
}

CUAPI CUresult cuOccupancyMaxPotentialBlockSizeWithFlags(int *min_grid, int *block_size, CUfunction f,
                                                         CUoccupancyB2DSize shared_of, size_t shared, int limit,
                                                         unsigned int flags)
{
    return potential_block_size(min_grid, block_size, f, shared_of, shared, limit, flags);
}

CUAPI CUresult cuOccupancyAvailableDynamicSMemPerBlock(size_t *bytes, CUfunction f, int blocks, int block)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!bytes || blocks < 0 || block <= 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!f)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    struct kvmgpu_results_occupancy_available_smem out;
    rc = kvmgpu_occupancy_available_smem(S, (uint64_t)(uintptr_t)f, (uint64_t)blocks, (uint64_t)block, &out);
    if (rc == 0)
        *bytes = (size_t)out.bytes;
    return rc;
}

/* How many clusters of the launch `config` describes can be resident at once (its cluster
 * attribute, else the kernel's own dimensions). Forwarded each time: asked once per kernel. */
CUAPI CUresult cuOccupancyMaxActiveClusters(int *clusters, CUfunction f, const CUlaunchConfig *config)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!clusters || !config || (config->numAttrs && !config->attrs))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!f)
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    unsigned cx = 0, cy = 0, cz = 0;
    for (unsigned i = 0; i < config->numAttrs; i++)
        if (config->attrs[i].id == 4) { /* CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION */
            cx = config->attrs[i].value.clusterDim.x;
            cy = config->attrs[i].value.clusterDim.y;
            cz = config->attrs[i].value.clusterDim.z;
        }
    struct kvmgpu_results_occupancy_max_clusters out;
    rc = kvmgpu_occupancy_max_clusters(S, (uint64_t)(uintptr_t)f, config->gridDimX, config->gridDimY, config->gridDimZ,
                                       config->blockDimX, config->blockDimY, config->blockDimZ, config->sharedMemBytes,
                                       cx, cy, cz, &out);
    if (rc == 0)
        *clusters = out.clusters;
    return rc;
}

/* --- limits ------------------------------------------------------------------------------------ */

static const char *const limit_names[LIMITS] = {
    "CU_LIMIT_STACK_SIZE", "CU_LIMIT_PRINTF_FIFO_SIZE", "CU_LIMIT_MALLOC_HEAP_SIZE", "CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH",
    "CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT", "CU_LIMIT_MAX_L2_FETCH_GRANULARITY", "CU_LIMIT_PERSISTING_L2_CACHE_SIZE",
};
static pthread_mutex_t limits_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t limit_value[LIMITS];
static int limit_known[LIMITS];

CUAPI CUresult cuCtxGetLimit(size_t *value, int limit)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!value || limit < 0 || limit >= LIMITS)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE; /* (the CIG limits: no CIG context here) */
    pthread_mutex_lock(&limits_lock);
    int known_ = limit_known[limit];
    *value = limit_value[limit];
    pthread_mutex_unlock(&limits_lock);
    if (known_)
        return KVMGPU_CUDA_SUCCESS;
    struct kvmgpu_results_ctx_get_limit out;
    rc = kvmgpu_ctx_get_limit(S, (uint64_t)limit, &out);
    if (rc)
        return rc;
    pthread_mutex_lock(&limits_lock);
    limit_value[limit] = (size_t)out.value;
    limit_known[limit] = 1;
    pthread_mutex_unlock(&limits_lock);
    *value = (size_t)out.value;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuCtxSetLimit(int limit, size_t value)
{
    size_t now;
    CUresult rc = cuCtxGetLimit(&now, limit);
    if (rc || now == value)
        return rc;
    static atomic_int said[LIMITS];
    if (!atomic_exchange(&said[limit], 1))
        kvmgpu_log("cuCtxSetLimit(%s, %zu): a VM's context keeps the host's limits (%zu): what they "
                   "size is device memory outside the VM's quota (CUDA_ERROR_NOT_SUPPORTED)",
                   limit_names[limit], value, now);
    return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
}

/* --- cuLaunchKernelEx -------------------------------------------------------------------------- */

enum { /* CUlaunchAttributeID */
    LA_IGNORE = 0, LA_ACCESS_POLICY_WINDOW, LA_COOPERATIVE, LA_SYNCHRONIZATION_POLICY, LA_CLUSTER_DIMENSION,
    LA_CLUSTER_SCHEDULING_POLICY_PREFERENCE, LA_PROGRAMMATIC_STREAM_SERIALIZATION, LA_PROGRAMMATIC_EVENT,
    LA_PRIORITY, LA_MEM_SYNC_DOMAIN_MAP, LA_MEM_SYNC_DOMAIN, LA_PREFERRED_CLUSTER_DIMENSION,
    LA_LAUNCH_COMPLETION_EVENT, LA_DEVICE_UPDATABLE_KERNEL_NODE, LA_PREFERRED_SHARED_MEMORY_CARVEOUT,
    LA_NVLINK_UTIL_CENTRIC_SCHEDULING = 16,
};

enum { R_COOPERATIVE, R_CLUSTER, R_EVENT, R_NEWER, R_KINDS };

static CUresult refuse_launch(int kind, const char *what)
{
    static atomic_int said[R_KINDS];
    if (!atomic_exchange(&said[kind], 1))
        kvmgpu_log("cuLaunchKernelEx: %s is not forwarded to the vGPU (CUDA_ERROR_NOT_SUPPORTED)", what);
    return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
}

#define ATTR_CLUSTER_WIDTH 11
#define ATTR_NON_PORTABLE_CLUSTER 14

/* A launch in clusters: the kernel's required cluster dimensions (attributes 11..13, forwarded
 * only when they change) say the launch's, and cuLaunchKernel launches in them, as it launches a
 * kernel compiled with __cluster_dims__. A kernel whose dimensions were set so is set back to none
 * before a launch without clusters. `dims` NULL: a launch without clusters. */
static atomic_int clustered; /* kernels whose cluster dimensions clusters() set */

static CUresult clusters(CUfunction f, const unsigned dims[3])
{
    uint64_t function = (uint64_t)(uintptr_t)f;
    int32_t v[FUNC_ATTRIBUTES];
    CUresult rc = f ? attributes_of(function, v) : KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    if (rc)
        return rc;
    pthread_mutex_lock(&attributes_lock);
    struct attributes *a = find(function);
    int set_here = a && a->cluster_set;
    pthread_mutex_unlock(&attributes_lock);
    static const unsigned none[3] = {0, 0, 0};
    if (!dims) {
        if (!set_here)
            return KVMGPU_CUDA_SUCCESS;
        dims = none;
    } else if ((uint64_t)dims[0] * dims[1] * dims[2] == 1 && !v[ATTR_CLUSTER_WIDTH] && !set_here) {
        return KVMGPU_CUDA_SUCCESS; /* clusters of one block: no clusters */
    }
    if (dims[0] > 0x7FFFFFFF || dims[1] > 0x7FFFFFFF || dims[2] > 0x7FFFFFFF)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if ((uint64_t)dims[0] * dims[1] * dims[2] > 8 && !v[ATTR_NON_PORTABLE_CLUSTER])
        rc = cuFuncSetAttribute(f, ATTR_NON_PORTABLE_CLUSTER, 1);
    for (int i = 0; rc == 0 && i < 3; i++)
        rc = cuFuncSetAttribute(f, ATTR_CLUSTER_WIDTH + i, (int)dims[i]); /* (sends nothing when unchanged) */
    pthread_mutex_lock(&attributes_lock);
    if ((a = find(function)) != NULL && rc == 0 && a->cluster_set != (dims != none)) {
        a->cluster_set = dims != none;
        atomic_fetch_add(&clustered, a->cluster_set ? 1 : -1);
    }
    pthread_mutex_unlock(&attributes_lock);
    return rc;
}

CUresult kvmgpu_launch_unclustered(CUfunction f)
{
    return atomic_load_explicit(&clustered, memory_order_relaxed) ? clusters(f, NULL) : KVMGPU_CUDA_SUCCESS;
}

/* The attributes a launch here may have: hints (of caching, priority, scheduling, overlap with
 * the previous kernel) are dropped, which orders work at least as strictly; clusters become the
 * kernel's required cluster dimensions (clusters(), above); a cooperative launch and events the
 * launch would trigger are refused by name. */
CUAPI CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
{
    if (!config || (config->numAttrs && !config->attrs))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    const unsigned *cluster = NULL;
    for (unsigned i = 0; i < config->numAttrs; i++) {
        const CUlaunchAttribute *a = &config->attrs[i];
        switch (a->id) {
        case LA_COOPERATIVE:
            if (a->value.cooperative)
                return refuse_launch(R_COOPERATIVE, "a cooperative launch (CU_LAUNCH_ATTRIBUTE_COOPERATIVE)");
            break;
        case LA_CLUSTER_DIMENSION:
            cluster = &a->value.clusterDim.x; /* (x, y, z: three unsigned ints in a row) */
            break;
        case LA_PROGRAMMATIC_EVENT:
        case LA_LAUNCH_COMPLETION_EVENT:
            return refuse_launch(R_EVENT, "an event a launch triggers (CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT / "
                                 "LAUNCH_COMPLETION_EVENT)");
        case LA_DEVICE_UPDATABLE_KERNEL_NODE:
            return KVMGPU_CUDA_ERROR_INVALID_VALUE; /* graphs only */
        case LA_IGNORE:
        case LA_ACCESS_POLICY_WINDOW:
        case LA_SYNCHRONIZATION_POLICY:
        case LA_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
        case LA_PROGRAMMATIC_STREAM_SERIALIZATION:
        case LA_PRIORITY:
        case LA_MEM_SYNC_DOMAIN_MAP:
        case LA_MEM_SYNC_DOMAIN:
        case LA_PREFERRED_CLUSTER_DIMENSION:
        case LA_PREFERRED_SHARED_MEMORY_CARVEOUT:
        case LA_NVLINK_UTIL_CENTRIC_SCHEDULING:
            break;
        default:
            return refuse_launch(R_NEWER, "a launch attribute of a newer CUDA");
        }
    }
    CUresult rc = kvmgpu_ready();
    if (rc == 0)
        rc = clusters(f, cluster);
    if (rc) {
        if (rc != KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE && rc != KVMGPU_CUDA_ERROR_INVALID_HANDLE && cluster)
            return refuse_launch(R_CLUSTER, "this launch in thread block clusters (the kernel's cluster "
                                            "dimensions could not be set)");
        return rc;
    }
    return kvmgpu_launch_kernel(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX,
                                config->blockDimY, config->blockDimZ, config->sharedMemBytes, config->hStream, params,
                                extra);
}

CUAPI CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
{
    return cuLaunchKernelEx(config, f, params, extra);
}

CUAPI CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                         unsigned by, unsigned bz, unsigned shared, CUstream stream, void **params)
{
    (void)f, (void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz, (void)shared, (void)stream, (void)params;
    return refuse_launch(R_COOPERATIVE, "a cooperative launch (cuLaunchCooperativeKernel)");
}

CUAPI CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                              unsigned by, unsigned bz, unsigned shared, CUstream stream,
                                              void **params)
{
    return cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shared, stream, params);
}

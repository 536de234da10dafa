/* The driver API's start, device queries (answered from the WELCOME's cache), contexts, memory,
 * streams and events. The worker has one context per session: every context here is that one,
 * and contexts only decide what is current on which thread. */
#define _GNU_SOURCE
#include "export.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kvmgpu_client kvmgpu_session;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int initialised; /* a session is open (it may have been lost since) */

#define MAX_CONTEXTS 64
#define STACK_DEPTH 32
struct CUctx_st {
    int used;
    unsigned flags;
};
static struct CUctx_st contexts[MAX_CONTEXTS]; /* [0]: the primary context */
static int primary_refs;
static unsigned primary_flags;
static _Thread_local CUcontext stack[STACK_DEPTH];
static _Thread_local int depth;

static void shutdown_session(void)
{
    kvmgpu_client_close(&kvmgpu_session, "process exit");
}

CUAPI CUresult cuInit(unsigned int flags)
{
    char err[KVMGPU_CLIENT_ERR];
    if (flags != 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&init_lock);
    CUresult rc = KVMGPU_CUDA_SUCCESS;
    if (!initialised) {
        if (kvmgpu_client_open(&kvmgpu_session, NULL, err, sizeof err) == 0) {
            static int registered;
            initialised = 1;
            if (!registered++)
                atexit(shutdown_session);
        } else {
            kvmgpu_log("%s", err);
            rc = KVMGPU_CUDA_ERROR_NO_DEVICE;
        }
    }
    pthread_mutex_unlock(&init_lock);
    return rc;
}

CUresult kvmgpu_initialised(void)
{
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    return kvmgpu_session.dead ? KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE : KVMGPU_CUDA_SUCCESS;
}

CUresult kvmgpu_ready(void)
{
    CUresult rc = kvmgpu_initialised();
    if (rc == 0 && (depth == 0 || stack[depth - 1] == NULL || !stack[depth - 1]->used))
        rc = KVMGPU_CUDA_ERROR_INVALID_CONTEXT;
    return rc;
}

void *kvmgpu_grow(void *items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return items;
    size_t more = *cap ? 2 * *cap : 64;
    void *grown = realloc(items, more * size);
    if (grown)
        *cap = more;
    return grown;
}

uint64_t kvmgpu_stream(CUstream s)
{
    return s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD ? 0 : (uint64_t)(uintptr_t)s;
}

/* --- driver and device ------------------------------------------------------------------------- */

CUAPI CUresult cuDriverGetVersion(int *version)
{
    if (!version)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!initialised) { /* the real driver answers before cuInit: so does this one, asking the host */
        CUresult rc = cuInit(0);
        if (rc)
            return rc;
    }
    *version = kvmgpu_session.device.driver_version;
    return KVMGPU_CUDA_SUCCESS;
}

static CUresult check_device(CUdevice dev)
{
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    return dev == 0 ? KVMGPU_CUDA_SUCCESS : KVMGPU_CUDA_ERROR_INVALID_DEVICE;
}

CUAPI CUresult cuDeviceGetCount(int *count)
{
    if (!count)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    *count = 1;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    if (!device)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = check_device(ordinal);
    if (rc == 0)
        *device = 0;
    return rc;
}

CUAPI CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc)
        return rc;
    if (!name || len <= 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    strncpy(name, kvmgpu_session.device.name, (size_t)len - 1);
    name[len - 1] = '\0';
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attrib, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc)
        return rc;
    if (!value || attrib <= 0 || attrib >= KVMGPU_CU_DEVICE_ATTRIBUTE_MAX)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    const struct kvmgpu_device *d = &kvmgpu_session.device;
    if (d->has_attribute[attrib])
        *value = d->attribute[attrib];
    else if (attrib == KVMGPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        *value = d->cc_major;
    else if (attrib == KVMGPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        *value = d->cc_minor;
    else
        *value = 0;
    if (kvmgpu_tracing())
        kvmgpu_log("cuDeviceGetAttribute(%d): %d%s", (int)attrib, *value,
                   d->has_attribute[attrib] ? "" : " (the host gave none)");
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc == 0 && !bytes)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        *bytes = (size_t)kvmgpu_session.device.total_memory;
    return rc;
}

CUAPI CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc == 0 && !uuid)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        memcpy(uuid->bytes, kvmgpu_session.device.uuid, 16);
    return rc;
}

CUAPI CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    return cuDeviceGetUuid(uuid, dev);
}

CUAPI CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc == 0 && (!major || !minor))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0) {
        *major = kvmgpu_session.device.cc_major;
        *minor = kvmgpu_session.device.cc_minor;
    }
    return rc;
}

/* Forwarded: the host driver's own text for the device ("0000:41:00.0"), cut to len as it cuts. */
CUAPI CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc == 0)
        rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!pciBusId || len <= 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_device_get_pci_bus_id out;
    rc = kvmgpu_device_get_pci_bus_id(&kvmgpu_session, &out);
    if (rc == 0) {
        size_t n = strnlen(out.bus_id, sizeof out.bus_id);
        if (n > (size_t)len - 1)
            n = (size_t)len - 1;
        memcpy(pciBusId, out.bus_id, n);
        pciBusId[n] = '\0';
    }
    return rc;
}

/* One device: no peer to reach. */
CUAPI CUresult cuDeviceCanAccessPeer(int *can, CUdevice dev, CUdevice peer)
{
    CUresult rc = check_device(dev);
    if (rc == 0)
        rc = check_device(peer);
    if (rc == 0 && !can)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        *can = 0;
    return rc;
}

/* --- contexts ---------------------------------------------------------------------------------- */

static int valid_context(CUcontext ctx)
{
    uintptr_t p = (uintptr_t)ctx, base = (uintptr_t)contexts;
    return p >= base && p < base + sizeof contexts && (p - base) % sizeof contexts[0] == 0 && ctx->used;
}

CUcontext kvmgpu_primary_context(void)
{
    pthread_mutex_lock(&init_lock);
    contexts[0].used = 1;
    contexts[0].flags = primary_flags;
    pthread_mutex_unlock(&init_lock);
    return &contexts[0];
}

static CUresult push(CUcontext ctx)
{
    if (depth >= STACK_DEPTH)
        return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    stack[depth++] = ctx;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc == 0 && !pctx)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc)
        return rc;
    pthread_mutex_lock(&init_lock);
    primary_refs++;
    contexts[0].used = 1;
    contexts[0].flags = primary_flags;
    pthread_mutex_unlock(&init_lock);
    *pctx = &contexts[0];
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc)
        return rc;
    pthread_mutex_lock(&init_lock);
    if (primary_refs <= 0)
        rc = KVMGPU_CUDA_ERROR_INVALID_CONTEXT;
    else
        primary_refs--;
    pthread_mutex_unlock(&init_lock);
    return rc;
}

CUAPI CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return cuDevicePrimaryCtxRelease_v2(dev);
}

/* The worker's context cannot be torn down from here: its work is waited for, and the primary
 * context is inactive again (what the process allocated stays until it ends). */
CUAPI CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc)
        return rc;
    if (kvmgpu_initialised() == 0)
        kvmgpu_ctx_synchronize(&kvmgpu_session);
    kvmgpu_context_storage_release(&contexts[0]); /* the runtime's state in it goes */
    pthread_mutex_lock(&init_lock);
    primary_refs = 0;
    pthread_mutex_unlock(&init_lock);
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    return cuDevicePrimaryCtxReset_v2(dev);
}

CUAPI CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active)
{
    CUresult rc = check_device(dev);
    if (rc == 0 && (!flags || !active))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0) {
        *flags = primary_flags;
        *active = primary_refs > 0;
    }
    return rc;
}

CUAPI CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags)
{
    CUresult rc = check_device(dev);
    if (rc == 0 && (flags & ~0xFFu))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        primary_flags = flags;
    return rc;
}

CUAPI CUresult cuDevicePrimaryCtxSetFlags(CUdevice dev, unsigned int flags)
{
    return cuDevicePrimaryCtxSetFlags_v2(dev, flags);
}

CUAPI CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    CUresult rc = check_device(dev);
    if (rc == 0 && (!pctx || (flags & ~0xFFu)))
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc)
        return rc;
    rc = KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&init_lock);
    for (int i = 1; i < MAX_CONTEXTS; i++) {
        if (!contexts[i].used) {
            contexts[i].used = 1;
            contexts[i].flags = flags;
            *pctx = &contexts[i];
            rc = KVMGPU_CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&init_lock);
    return rc == 0 ? push(*pctx) : rc;
}

CUAPI CUresult cuCtxCreate_v3(CUcontext *pctx, void *affinity, int count, unsigned int flags, CUdevice dev)
{
    (void)affinity;
    if (count > 0) /* execution affinity (SM partitions) is the host's to give */
        return KVMGPU_CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
    return cuCtxCreate_v2(pctx, flags, dev);
}

CUAPI CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags, CUdevice dev)
{
    if (params && (params->numExecAffinityParams > 0 || params->cigParams))
        return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
    return cuCtxCreate_v2(pctx, flags, dev);
}

CUAPI CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    pthread_mutex_lock(&init_lock);
    int ok = valid_context(ctx) && ctx != &contexts[0];
    if (ok)
        ctx->used = 0;
    pthread_mutex_unlock(&init_lock);
    if (!ok)
        return KVMGPU_CUDA_ERROR_INVALID_CONTEXT;
    kvmgpu_context_storage_release(ctx);
    int kept = 0;
    for (int i = 0; i < depth; i++)
        if (stack[i] != ctx)
            stack[kept++] = stack[i];
    depth = kept;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuCtxSetCurrent(CUcontext ctx)
{
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    if (ctx == NULL) {
        if (depth)
            depth--;
        return KVMGPU_CUDA_SUCCESS;
    }
    if (!valid_context(ctx))
        return KVMGPU_CUDA_ERROR_INVALID_CONTEXT;
    if (depth)
        stack[depth - 1] = ctx;
    else
        stack[depth++] = ctx;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    if (!pctx)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    *pctx = depth ? stack[depth - 1] : NULL;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    if (!valid_context(ctx))
        return KVMGPU_CUDA_ERROR_INVALID_CONTEXT;
    return push(ctx);
}

CUAPI CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    if (!depth)
        return KVMGPU_CUDA_ERROR_INVALID_CONTEXT;
    CUcontext top = stack[--depth];
    if (pctx)
        *pctx = top;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuCtxGetFlags(unsigned int *flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0 && !flags)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        *flags = stack[depth - 1]->flags;
    return rc;
}

CUAPI CUresult cuCtxGetDevice(CUdevice *device)
{
    if (!device)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = kvmgpu_ready();
    if (rc == 0)
        *device = 0;
    return rc;
}

CUAPI CUresult cuCtxSynchronize(void)
{
    CUresult rc = kvmgpu_ready();
    if (rc == 0)
        rc = kvmgpu_capture_context_sync(); /* not while a stream captures */
    return rc ? rc : kvmgpu_ctx_synchronize(&kvmgpu_session);
}

/* The driver API version a context was made by: 3020 (cuCtxCreate_v2's) for every context since
 * CUDA 3.2, which is what the driver answers. */
CUAPI CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version)
{
    if (!initialised)
        return KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    if (!version)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (ctx && !valid_context(ctx))
        return KVMGPU_CUDA_ERROR_INVALID_CONTEXT;
    *version = 3020;
    return KVMGPU_CUDA_SUCCESS;
}

/* CUDA 13's forms naming the context (NULL: the current one); every context is the worker's one. */
CUAPI CUresult cuCtxGetDevice_v2(CUdevice *device, CUcontext ctx)
{
    if (ctx && !valid_context(ctx))
        return initialised ? KVMGPU_CUDA_ERROR_INVALID_CONTEXT : KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    if (!device)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (!ctx)
        return cuCtxGetDevice(device);
    *device = 0;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    if (ctx && !valid_context(ctx))
        return initialised ? KVMGPU_CUDA_ERROR_INVALID_CONTEXT : KVMGPU_CUDA_ERROR_NOT_INITIALIZED;
    if (!ctx)
        return cuCtxSynchronize();
    CUresult rc = kvmgpu_initialised();
    if (rc == 0)
        rc = kvmgpu_capture_context_sync();
    return rc ? rc : kvmgpu_ctx_synchronize(&kvmgpu_session);
}

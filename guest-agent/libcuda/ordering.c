/* Stream ordering: cuStreamWaitEvent is forwarded (queued; a stream that waits for an event
 * recorded into a capture joins that capture, capture.c follows it); what the host has no op for
 * yet is kept in the guest with waits that order at least as strictly as CUDA asks (they cost
 * concurrency, never correctness):
 *   cuLaunchHostFunc,       the stream's work is waited for, then the function runs on the calling
 *   cuStreamAddCallback     thread (CUDA forbids CUDA calls in it: nothing here depends on that)
 *   stream priorities       none: the range is 0..0, as the driver says for a device without them
 *   cuEventRecordWithFlags  a record (CU_EVENT_RECORD_DEFAULT only)
 * and the streams this process created, with their flags and context: cuStreamGetFlags,
 * cuStreamGetCtx and cuStreamGetDevice are answered here, and capture.c asks whether a capturing
 * stream is blocking (a synchronous copy on the legacy stream waits for it). */
#include "api.h"

#include <pthread.h>

#include "export.h"

typedef void (*host_fn)(void *user_data);
typedef void (*stream_callback)(CUstream stream, CUresult status, void *user_data);

CUresult cuEventSynchronize(CUevent event);
CUresult cuEventRecord(CUevent event, CUstream stream);
CUresult cuStreamCreate(CUstream *stream, unsigned int flags);

#define CU_STREAM_NON_BLOCKING 1u

struct stream_info {
    uint64_t stream; /* the host's handle */
    unsigned flags;
    CUcontext ctx; /* current when it was created */
};
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stream_info *streams;
static size_t nstreams, streams_cap;

void kvmgpu_stream_created(uint64_t stream, unsigned flags)
{
    CUcontext ctx = NULL;
    cuCtxGetCurrent(&ctx);
    pthread_mutex_lock(&streams_lock);
    struct stream_info *grown = kvmgpu_grow(streams, nstreams, &streams_cap, sizeof *streams);
    if (!grown) { /* (then it is not known here: cuStreamGetFlags says INVALID_HANDLE) */
        pthread_mutex_unlock(&streams_lock);
        return;
    }
    streams = grown;
    streams[nstreams++] = (struct stream_info){stream, flags, ctx};
    pthread_mutex_unlock(&streams_lock);
}

void kvmgpu_stream_destroyed(uint64_t stream)
{
    pthread_mutex_lock(&streams_lock);
    for (size_t i = 0; i < nstreams; i++)
        if (streams[i].stream == stream) {
            streams[i] = streams[--nstreams];
            break;
        }
    pthread_mutex_unlock(&streams_lock);
}

/* A stream of this process: 1 and its information; 0 for none (the null streams are not here). */
static int stream_info(uint64_t stream, struct stream_info *out)
{
    int found = 0;
    pthread_mutex_lock(&streams_lock);
    for (size_t i = 0; i < nstreams && !found; i++)
        if (streams[i].stream == stream) {
            *out = streams[i];
            found = 1;
        }
    pthread_mutex_unlock(&streams_lock);
    return found;
}

int kvmgpu_stream_blocking(uint64_t stream)
{
    struct stream_info info;
    return !stream_info(stream, &info) || !(info.flags & CU_STREAM_NON_BLOCKING);
}

CUAPI CUresult cuStreamGetFlags(CUstream stream, unsigned int *flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!flags)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    uint64_t s = kvmgpu_stream(stream);
    struct stream_info info = {0};
    if (s && !stream_info(s, &info))
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    *flags = info.flags; /* (the null streams: 0, CU_STREAM_DEFAULT) */
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuStreamGetFlags_ptsz(CUstream stream, unsigned int *flags)
{
    return cuStreamGetFlags(stream, flags);
}

CUAPI CUresult cuStreamGetCtx(CUstream stream, CUcontext *pctx)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!pctx)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    uint64_t s = kvmgpu_stream(stream);
    struct stream_info info;
    if (!s)
        return cuCtxGetCurrent(pctx); /* (the null streams are the current context's) */
    if (!stream_info(s, &info))
        return KVMGPU_CUDA_ERROR_INVALID_HANDLE;
    *pctx = info.ctx;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuStreamGetCtx_ptsz(CUstream stream, CUcontext *pctx)
{
    return cuStreamGetCtx(stream, pctx);
}

CUAPI CUresult cuStreamGetDevice(CUstream stream, CUdevice *device)
{
    CUcontext ctx;
    CUresult rc = cuStreamGetCtx(stream, &ctx);
    if (rc == 0 && !device)
        rc = KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (rc == 0)
        *device = 0; /* (the VM's one device) */
    return rc;
}

CUAPI CUresult cuStreamGetDevice_ptsz(CUstream stream, CUdevice *device)
{
    return cuStreamGetDevice(stream, device);
}

CUAPI CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned int flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (flags & ~1u) /* CU_EVENT_WAIT_DEFAULT | CU_EVENT_WAIT_EXTERNAL */
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    rc = kvmgpu_stream_wait_event(&kvmgpu_session, kvmgpu_stream(stream), (uint64_t)(uintptr_t)event, flags, 1);
    if (rc == 0)
        kvmgpu_capture_join(stream, event);
    return rc;
}

CUAPI CUresult cuStreamWaitEvent_ptsz(CUstream stream, CUevent event, unsigned int flags)
{
    return cuStreamWaitEvent(stream, event, flags);
}

CUAPI CUresult cuLaunchHostFunc(CUstream stream, host_fn fn, void *user_data)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!fn)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    rc = cuStreamSynchronize(stream);
    if (rc == 0)
        fn(user_data);
    return rc;
}

CUAPI CUresult cuLaunchHostFunc_ptsz(CUstream stream, host_fn fn, void *user_data)
{
    return cuLaunchHostFunc(stream, fn, user_data);
}

/* A callback is told the stream's status: it is called with an error too, as CUDA does. */
CUAPI CUresult cuStreamAddCallback(CUstream stream, stream_callback callback, void *user_data, unsigned int flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!callback || flags != 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult status = cuStreamSynchronize(stream);
    callback(stream, status, user_data);
    return status == KVMGPU_CUDA_ERROR_DEVICE_UNAVAILABLE ? status : KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuStreamAddCallback_ptsz(CUstream stream, stream_callback callback, void *user_data, unsigned int flags)
{
    return cuStreamAddCallback(stream, callback, user_data, flags);
}

CUAPI CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (least)
        *least = 0;
    if (greatest)
        *greatest = 0;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuStreamCreateWithPriority(CUstream *stream, unsigned int flags, int priority)
{
    (void)priority; /* (clamped to the range 0..0, as the driver clamps) */
    return cuStreamCreate(stream, flags);
}

/* Forwarded (the stream's own priority; a destroyed stream is INVALID_HANDLE, as on the driver). */
CUAPI CUresult cuStreamGetPriority(CUstream stream, int *priority)
{
    if (!priority)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = kvmgpu_ready();
    struct kvmgpu_results_stream_get_priority out;
    if (rc == 0 && (rc = kvmgpu_stream_get_priority(&kvmgpu_session, kvmgpu_stream(stream), &out)) == 0)
        *priority = out.priority;
    return rc;
}

CUAPI CUresult cuStreamGetPriority_ptsz(CUstream stream, int *priority)
{
    return cuStreamGetPriority(stream, priority);
}

CUAPI CUresult cuEventRecordWithFlags(CUevent event, CUstream stream, unsigned int flags)
{
    if (flags != 0) /* CU_EVENT_RECORD_EXTERNAL is for graphs */
        return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
    return cuEventRecord(event, stream);
}

CUAPI CUresult cuEventRecordWithFlags_ptsz(CUevent event, CUstream stream, unsigned int flags)
{
    return cuEventRecordWithFlags(event, stream, flags);
}

/* Stream ordering the host has no op for yet, kept in the guest with waits that order at least
 * as strictly as CUDA asks (they cost concurrency, never correctness):
 *   cuStreamWaitEvent       the event is waited for here before the call returns, so whatever the
 *                           stream does next comes after it
 *   cuLaunchHostFunc,       the stream's work is waited for, then the function runs on the calling
 *   cuStreamAddCallback     thread (CUDA forbids CUDA calls in it: nothing here depends on that)
 *   stream priorities       none: the range is 0..0, as the driver says for a device without them
 *   cuEventRecordWithFlags  a record (CU_EVENT_RECORD_DEFAULT only) */
#include "api.h"

#include "export.h"

typedef void (*host_fn)(void *user_data);
typedef void (*stream_callback)(CUstream stream, CUresult status, void *user_data);

CUresult cuEventSynchronize(CUevent event);
CUresult cuEventRecord(CUevent event, CUstream stream);
CUresult cuStreamCreate(CUstream *stream, unsigned int flags);

CUAPI CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned int flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (flags & ~1u) /* CU_EVENT_WAIT_DEFAULT | CU_EVENT_WAIT_EXTERNAL */
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    (void)stream;
    /* (the host's wait, not cuEventSynchronize: an asynchronous call is no unsafe call during a
     * stream capture, capture.c) */
    return kvmgpu_event_synchronize(&kvmgpu_session, (uint64_t)(uintptr_t)event);
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

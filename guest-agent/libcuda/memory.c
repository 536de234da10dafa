/* Memory, copies, memsets, streams and events (each potentially unsafe call asks capture.c first). A copy's bytes go through the session's window
 * (client.c); an asynchronous copy is staged the same way and so has finished when it returns,
 * which CUDA allows. Async memsets and device-to-device copies, and event records, are queued:
 * their errors come with the next synchronising call, as the driver reports asynchronous errors. */
#include "api.h"

#define S (&kvmgpu_session)
#define READY()                       \
    do {                              \
        CUresult rc_ = kvmgpu_ready(); \
        if (rc_)                      \
            return rc_;               \
    } while (0)
/* A potentially unsafe call while a stream captures: the thread's capture mode decides (capture.c). */
#define UNSAFE()                                \
    do {                                        \
        CUresult rc_ = kvmgpu_capture_unsafe(); \
        if (rc_)                                \
            return rc_;                         \
    } while (0)
/* A synchronous copy or memset: on the legacy stream (not the per-thread one, which waits for no
 * other stream), not while a blocking stream captures (capture.c). */
#define ON_LEGACY(stream)                                                \
    do {                                                                 \
        CUresult rc_ = (stream) == CU_STREAM_LEGACY ? kvmgpu_capture_legacy() : 0; \
        if (rc_)                                                         \
            return rc_;                                                  \
    } while (0)

CUAPI CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    READY();
    UNSAFE();
    if (!dptr || bytesize == 0)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_mem_alloc out;
    CUresult rc = kvmgpu_mem_alloc(S, bytesize, &out);
    if (rc == 0) {
        *dptr = out.dptr;
        kvmgpu_device_memory_add(out.dptr, bytesize);
    }
    return rc;
}

CUAPI CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    READY();
    UNSAFE();
    CUresult rc = kvmgpu_mem_free(S, dptr, 0);
    if (rc == 0)
        kvmgpu_device_memory_remove(dptr);
    return rc;
}

CUAPI CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    READY();
    if (!free_bytes || !total)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_mem_get_info out;
    CUresult rc = kvmgpu_mem_get_info(S, &out);
    if (rc == 0) {
        *free_bytes = (size_t)out.free;
        *total = (size_t)out.total;
    }
    return rc;
}

/* --- copies ------------------------------------------------------------------------------------ */

static CUresult htod(CUdeviceptr dst, const void *src, size_t n, CUstream stream)
{
    READY();
    if (!src && n)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    return kvmgpu_client_htod(S, dst, src, n, kvmgpu_stream(stream));
}

static CUresult dtoh(void *dst, CUdeviceptr src, size_t n, CUstream stream)
{
    READY();
    if (!dst && n)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    return kvmgpu_client_dtoh(S, dst, src, n, kvmgpu_stream(stream));
}

static CUresult dtod(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream, int queued)
{
    READY();
    if (!queued)
        ON_LEGACY(stream);
    return kvmgpu_memcpy_dtod(S, dst, src, n, kvmgpu_stream(stream), queued);
}

CUAPI CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
    ON_LEGACY(CU_STREAM_LEGACY);
    return htod(dst, src, n, NULL);
}

CUAPI CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dst, const void *src, size_t n)
{
    return htod(dst, src, n, NULL);
}

CUAPI CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream stream)
{
    return htod(dst, src, n, stream);
}

CUAPI CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dst, const void *src, size_t n, CUstream stream)
{
    return htod(dst, src, n, stream);
}

CUAPI CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
    ON_LEGACY(CU_STREAM_LEGACY);
    return dtoh(dst, src, n, NULL);
}

CUAPI CUresult cuMemcpyDtoH_v2_ptds(void *dst, CUdeviceptr src, size_t n)
{
    return dtoh(dst, src, n, NULL);
}

CUAPI CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream stream)
{
    return dtoh(dst, src, n, stream);
}

CUAPI CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dst, CUdeviceptr src, size_t n, CUstream stream)
{
    return dtoh(dst, src, n, stream);
}

CUAPI CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return dtod(dst, src, n, CU_STREAM_LEGACY, 0);
}

CUAPI CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return dtod(dst, src, n, CU_STREAM_PER_THREAD, 0);
}

CUAPI CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream)
{
    return dtod(dst, src, n, stream, 1);
}

CUAPI CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream)
{
    return dtod(dst, src, n, stream, 1);
}

/* --- memsets ----------------------------------------------------------------------------------- */

static CUresult memset8(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream, int queued)
{
    READY();
    if (!queued)
        ON_LEGACY(stream);
    return kvmgpu_memset_d8(S, dst, value, n, kvmgpu_stream(stream), queued);
}

static CUresult memset32(CUdeviceptr dst, unsigned int value, size_t n, CUstream stream, int queued)
{
    READY();
    if (!queued)
        ON_LEGACY(stream);
    return kvmgpu_memset_d32(S, dst, value, n, kvmgpu_stream(stream), queued);
}

CUAPI CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n)
{
    return memset8(dst, value, n, CU_STREAM_LEGACY, 0);
}

CUAPI CUresult cuMemsetD8_v2_ptds(CUdeviceptr dst, unsigned char value, size_t n)
{
    return memset8(dst, value, n, CU_STREAM_PER_THREAD, 0);
}

CUAPI CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream)
{
    return memset8(dst, value, n, stream, 1);
}

CUAPI CUresult cuMemsetD8Async_ptsz(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream)
{
    return memset8(dst, value, n, stream, 1);
}

CUAPI CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int value, size_t n)
{
    return memset32(dst, value, n, CU_STREAM_LEGACY, 0);
}

CUAPI CUresult cuMemsetD32_v2_ptds(CUdeviceptr dst, unsigned int value, size_t n)
{
    return memset32(dst, value, n, CU_STREAM_PER_THREAD, 0);
}

CUAPI CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int value, size_t n, CUstream stream)
{
    return memset32(dst, value, n, stream, 1);
}

CUAPI CUresult cuMemsetD32Async_ptsz(CUdeviceptr dst, unsigned int value, size_t n, CUstream stream)
{
    return memset32(dst, value, n, stream, 1);
}

/* --- streams ----------------------------------------------------------------------------------- */

CUAPI CUresult cuStreamCreate(CUstream *stream, unsigned int flags)
{
    READY();
    if (!stream)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_stream_create out;
    CUresult rc = kvmgpu_stream_create(S, flags, &out);
    if (rc == 0) {
        *stream = (CUstream)(uintptr_t)out.stream;
        kvmgpu_stream_created(out.stream, flags);
    }
    return rc;
}

CUAPI CUresult cuStreamDestroy_v2(CUstream stream)
{
    READY();
    CUresult rc = kvmgpu_stream_destroy(S, (uint64_t)(uintptr_t)stream, 0);
    if (rc == 0) {
        kvmgpu_capture_forget(stream);
        kvmgpu_stream_destroyed((uint64_t)(uintptr_t)stream);
    }
    return rc;
}

CUAPI CUresult cuStreamSynchronize(CUstream stream)
{
    READY();
    CUresult rc = kvmgpu_capture_wait(stream);
    if (rc)
        return rc;
    return kvmgpu_stream_synchronize(S, kvmgpu_stream(stream));
}

CUAPI CUresult cuStreamSynchronize_ptsz(CUstream stream)
{
    return cuStreamSynchronize(stream);
}

CUAPI CUresult cuStreamQuery(CUstream stream)
{
    READY();
    CUresult rc = kvmgpu_capture_wait(stream);
    if (rc)
        return rc;
    return kvmgpu_stream_query(S, kvmgpu_stream(stream));
}

CUAPI CUresult cuStreamQuery_ptsz(CUstream stream)
{
    return cuStreamQuery(stream);
}

/* --- events ------------------------------------------------------------------------------------ */

CUAPI CUresult cuEventCreate(CUevent *event, unsigned int flags)
{
    READY();
    if (!event)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_event_create out;
    CUresult rc = kvmgpu_event_create(S, flags, &out);
    if (rc == 0)
        *event = (CUevent)(uintptr_t)out.event;
    return rc;
}

CUAPI CUresult cuEventRecord(CUevent event, CUstream stream)
{
    READY();
    CUresult rc = kvmgpu_event_record(S, (uint64_t)(uintptr_t)event, kvmgpu_stream(stream), 1);
    if (rc == 0)
        kvmgpu_capture_record(event, stream);
    return rc;
}

CUAPI CUresult cuEventRecord_ptsz(CUevent event, CUstream stream)
{
    return cuEventRecord(event, stream);
}

CUAPI CUresult cuEventSynchronize(CUevent event)
{
    READY();
    UNSAFE();
    return kvmgpu_event_synchronize(S, (uint64_t)(uintptr_t)event);
}

CUAPI CUresult cuEventQuery(CUevent event)
{
    READY();
    UNSAFE();
    return kvmgpu_event_query(S, (uint64_t)(uintptr_t)event);
}

CUAPI CUresult cuEventElapsedTime_v2(float *ms, CUevent start, CUevent end)
{
    READY();
    if (!ms)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_event_elapsed out;
    CUresult rc = kvmgpu_event_elapsed(S, (uint64_t)(uintptr_t)start, (uint64_t)(uintptr_t)end, &out);
    if (rc == 0)
        *ms = out.ms;
    return rc;
}

CUAPI CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end)
{
    return cuEventElapsedTime_v2(ms, start, end);
}

CUAPI CUresult cuEventDestroy_v2(CUevent event)
{
    READY();
    return kvmgpu_event_destroy(S, (uint64_t)(uintptr_t)event, 0);
}

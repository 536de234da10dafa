/* 2D and 3D copies, 16-bit and 2D memsets, and copies between the VM's one device's contexts.
 *
 * Between device ranges a 2D copy is one call (MEMCPY_2D: the host checks each side's rows inside
 * one allocation); a 3D copy is that 2D copy for each slice, or one 2D copy of all the rows where
 * the slices follow each other. With host memory on a side the rows go through the 1D paths (a
 * copy whose rows are contiguous is one 1D copy); device to host reads the rows' whole span in one
 * call where it is at most twice the rows' bytes. Arrays (CU_MEMORYTYPE_ARRAY) are refused by name:
 * the VM is given no CUDA arrays yet. */
#include "api.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define S (&kvmgpu_session)
#define READY()                       \
    do {                              \
        CUresult rc_ = kvmgpu_ready(); \
        if (rc_)                      \
            return rc_;               \
    } while (0)

/* One side of a copy: a device address or a host pointer, with its pitch. */
struct side {
    int device;
    uint64_t at; /* the first row's first byte */
    size_t pitch;
};

static CUresult refuse_arrays(const char *call)
{
    static atomic_int said;
    if (!atomic_exchange(&said, 1))
        kvmgpu_log("%s: CUDA arrays are not given to a VM (CUDA_ERROR_NOT_SUPPORTED)", call);
    return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
}

/* A side from its memory type, pointers and offsets; INVALID_VALUE where x + y*pitch overflows. */
static CUresult side_of(struct side *s, int type, const void *host, CUdeviceptr device, size_t x, size_t y,
                        size_t pitch, const char *call)
{
    uint64_t base;
    switch (type) {
    case CU_MEMORYTYPE_HOST:
        s->device = 0, base = (uint64_t)(uintptr_t)host;
        break;
    case CU_MEMORYTYPE_DEVICE:
        s->device = 1, base = device;
        break;
    case CU_MEMORYTYPE_UNIFIED: /* a pointer of this process's allocations is device memory */
        s->device = kvmgpu_device_allocation(device, NULL, NULL), base = device;
        break;
    case CU_MEMORYTYPE_ARRAY:
        return refuse_arrays(call);
    default:
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    }
    if (!base)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE; /* (a NULL host pointer is no memory to copy) */
    uint64_t offset;
    if (__builtin_mul_overflow((uint64_t)y, (uint64_t)pitch, &offset) || __builtin_add_overflow(offset, x, &offset) ||
        __builtin_add_overflow(base, offset, &s->at))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    s->pitch = pitch;
    return KVMGPU_CUDA_SUCCESS;
}

static CUresult row_copy(const struct side *d, const struct side *s, uint64_t dst, uint64_t src, size_t n,
                         CUstream stream, int async)
{
    if (d->device && s->device)
        return async ? cuMemcpyDtoDAsync_v2(dst, src, n, stream) : cuMemcpyDtoD_v2(dst, src, n);
    if (d->device)
        return async ? cuMemcpyHtoDAsync_v2(dst, (const void *)(uintptr_t)src, n, stream)
                     : cuMemcpyHtoD_v2(dst, (const void *)(uintptr_t)src, n);
    if (s->device)
        return async ? cuMemcpyDtoHAsync_v2((void *)(uintptr_t)dst, src, n, stream)
                     : cuMemcpyDtoH_v2((void *)(uintptr_t)dst, src, n);
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return KVMGPU_CUDA_SUCCESS;
}

/* `height` rows of `width` bytes. */
static CUresult copy_rows(const struct side *d, const struct side *s, size_t width, size_t height, CUstream stream,
                          int async)
{
    if (width == 0 || height == 0)
        return KVMGPU_CUDA_SUCCESS;
    if (width > d->pitch || width > s->pitch)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    size_t span_d, span_s, bytes;
    if (__builtin_mul_overflow(d->pitch, height - 1, &span_d) || __builtin_add_overflow(span_d, width, &span_d) ||
        __builtin_mul_overflow(s->pitch, height - 1, &span_s) || __builtin_add_overflow(span_s, width, &span_s) ||
        __builtin_mul_overflow(width, height, &bytes))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (d->device && s->device)
        return kvmgpu_memcpy_2d(S, d->at, d->pitch, s->at, s->pitch, width, height, kvmgpu_stream(stream), async);
    if (height == 1 || (width == d->pitch && width == s->pitch))
        return row_copy(d, s, d->at, s->at, bytes, stream, async); /* one contiguous range */
    if (!d->device && s->device && span_s <= 2 * bytes) { /* the rows' span in one read */
        uint8_t *span = malloc(span_s);
        if (!span)
            return KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
        CUresult rc = async ? cuMemcpyDtoHAsync_v2(span, s->at, span_s, stream) : cuMemcpyDtoH_v2(span, s->at, span_s);
        for (size_t i = 0; rc == 0 && i < height; i++)
            memcpy((uint8_t *)(uintptr_t)(d->at + i * d->pitch), span + i * s->pitch, width);
        free(span);
        return rc;
    }
    if (!d->device && !s->device && async) { /* host to host, in stream order */
        CUresult rc = cuStreamSynchronize(stream);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < height; i++) {
        CUresult rc = row_copy(d, s, d->at + i * d->pitch, s->at + i * s->pitch, width, stream, async);
        if (rc)
            return rc;
    }
    return KVMGPU_CUDA_SUCCESS;
}

static CUresult copy2d(const CUDA_MEMCPY2D *p, CUstream stream, int async, const char *call)
{
    READY();
    if (!p)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct side d, s;
    CUresult rc = side_of(&s, p->srcMemoryType, p->srcHost, p->srcDevice, p->srcXInBytes, p->srcY, p->srcPitch, call);
    if (rc == 0)
        rc = side_of(&d, p->dstMemoryType, p->dstHost, p->dstDevice, p->dstXInBytes, p->dstY, p->dstPitch, call);
    return rc ? rc : copy_rows(&d, &s, p->WidthInBytes, p->Height, stream, async);
}

CUAPI CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *p) { return copy2d(p, NULL, 0, "cuMemcpy2D"); }
CUAPI CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *p) { return copy2d(p, NULL, 0, "cuMemcpy2D"); }
CUAPI CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *p) { return copy2d(p, NULL, 0, "cuMemcpy2DUnaligned"); }
CUAPI CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *p)
{
    return copy2d(p, NULL, 0, "cuMemcpy2DUnaligned");
}
CUAPI CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *p, CUstream stream)
{
    return copy2d(p, stream, 1, "cuMemcpy2DAsync");
}
CUAPI CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *p, CUstream stream)
{
    return copy2d(p, stream, 1, "cuMemcpy2DAsync");
}

/* A 3D copy: Depth slices of Height rows, a slice srcHeight (dstHeight) rows of its pitch apart. */
static CUresult copy3d(const CUDA_MEMCPY3D *p, CUstream stream, int async)
{
    READY();
    if (!p || p->reserved0 || p->reserved1 || p->srcLOD || p->dstLOD)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (p->WidthInBytes == 0 || p->Height == 0 || p->Depth == 0)
        return KVMGPU_CUDA_SUCCESS;
    size_t src_rows = p->Depth > 1 ? p->srcHeight : p->Height, dst_rows = p->Depth > 1 ? p->dstHeight : p->Height;
    if (src_rows < p->Height || dst_rows < p->Height)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    size_t src_y, dst_y;
    if (__builtin_mul_overflow(p->srcZ, src_rows, &src_y) || __builtin_add_overflow(src_y, p->srcY, &src_y) ||
        __builtin_mul_overflow(p->dstZ, dst_rows, &dst_y) || __builtin_add_overflow(dst_y, p->dstY, &dst_y))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct side d, s;
    CUresult rc = side_of(&s, p->srcMemoryType, p->srcHost, p->srcDevice, p->srcXInBytes, src_y, p->srcPitch, "cuMemcpy3D");
    if (rc == 0)
        rc = side_of(&d, p->dstMemoryType, p->dstHost, p->dstDevice, p->dstXInBytes, dst_y, p->dstPitch, "cuMemcpy3D");
    if (rc)
        return rc;
    size_t rows;
    if (src_rows == p->Height && dst_rows == p->Height && !__builtin_mul_overflow(p->Height, p->Depth, &rows))
        return copy_rows(&d, &s, p->WidthInBytes, rows, stream, async); /* the slices follow each other */
    for (size_t z = 0; z < p->Depth; z++) {
        size_t ds, ss;
        if (__builtin_mul_overflow(dst_rows, z, &ds) || __builtin_mul_overflow(ds, d.pitch, &ds) ||
            __builtin_mul_overflow(src_rows, z, &ss) || __builtin_mul_overflow(ss, s.pitch, &ss))
            return KVMGPU_CUDA_ERROR_INVALID_VALUE;
        struct side dz = {d.device, d.at + ds, d.pitch}, sz = {s.device, s.at + ss, s.pitch};
        if (dz.at < d.at || sz.at < s.at)
            return KVMGPU_CUDA_ERROR_INVALID_VALUE;
        rc = copy_rows(&dz, &sz, p->WidthInBytes, p->Height, stream, async);
        if (rc)
            return rc;
    }
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuMemcpy3D_v2(const CUDA_MEMCPY3D *p) { return copy3d(p, NULL, 0); }
CUAPI CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D *p) { return copy3d(p, NULL, 0); }
CUAPI CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *p, CUstream stream) { return copy3d(p, stream, 1); }
CUAPI CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D *p, CUstream stream) { return copy3d(p, stream, 1); }

/* --- between contexts: the VM has one device, and so one memory ------------------------------- */

CUAPI CUresult cuMemcpyPeer(CUdeviceptr dst, CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx, size_t n)
{
    (void)dst_ctx, (void)src_ctx;
    return cuMemcpyDtoD_v2(dst, src, n);
}
CUAPI CUresult cuMemcpyPeer_ptds(CUdeviceptr dst, CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx, size_t n)
{
    return cuMemcpyPeer(dst, dst_ctx, src, src_ctx, n);
}
CUAPI CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx, size_t n,
                                 CUstream stream)
{
    (void)dst_ctx, (void)src_ctx;
    return cuMemcpyDtoDAsync_v2(dst, src, n, stream);
}
CUAPI CUresult cuMemcpyPeerAsync_ptsz(CUdeviceptr dst, CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx,
                                      size_t n, CUstream stream)
{
    return cuMemcpyPeerAsync(dst, dst_ctx, src, src_ctx, n, stream);
}

/* --- memsets ----------------------------------------------------------------------------------- */

static CUresult memset16(CUdeviceptr dst, unsigned short value, size_t n, CUstream stream, int queued)
{
    READY();
    if (!queued && stream == CU_STREAM_LEGACY) { /* (as memory.c's memsets) */
        CUresult rc = kvmgpu_capture_legacy();
        if (rc)
            return rc;
    }
    return kvmgpu_memset_d16(S, dst, value, n, kvmgpu_stream(stream), queued);
}

CUAPI CUresult cuMemsetD16_v2(CUdeviceptr dst, unsigned short v, size_t n)
{
    return memset16(dst, v, n, CU_STREAM_LEGACY, 0);
}
CUAPI CUresult cuMemsetD16_v2_ptds(CUdeviceptr dst, unsigned short v, size_t n)
{
    return memset16(dst, v, n, CU_STREAM_PER_THREAD, 0);
}
CUAPI CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream stream)
{
    return memset16(dst, v, n, stream, 1);
}
CUAPI CUresult cuMemsetD16Async_ptsz(CUdeviceptr dst, unsigned short v, size_t n, CUstream stream)
{
    return memset16(dst, v, n, stream, 1);
}

/* `height` rows of `width` elements of `size` bytes, `pitch` bytes apart: one memset where the
 * rows are contiguous, else one a row, queued (the synchronous form's last one reports). */
static CUresult memset2d(CUdeviceptr dst, size_t pitch, unsigned value, size_t width, size_t height, int size,
                         CUstream stream, int async)
{
    READY();
    size_t row, total;
    if (__builtin_mul_overflow(width, (size_t)size, &row) || (height > 1 && row > pitch))
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (width == 0 || height == 0)
        return KVMGPU_CUDA_SUCCESS;
    uint64_t s = kvmgpu_stream(stream);
    if (row == pitch || height == 1) {
        if (__builtin_mul_overflow(width, height, &total))
            return KVMGPU_CUDA_ERROR_INVALID_VALUE;
        height = 1, width = total;
    }
    for (size_t i = 0; i < height; i++) {
        uint64_t at;
        if (__builtin_mul_overflow((uint64_t)i, (uint64_t)pitch, &at) || __builtin_add_overflow(at, dst, &at))
            return KVMGPU_CUDA_ERROR_INVALID_VALUE;
        int queued = async || i + 1 < height;
        CUresult rc = size == 1 ? kvmgpu_memset_d8(S, at, value & 0xFF, width, s, queued)
                      : size == 2 ? kvmgpu_memset_d16(S, at, value & 0xFFFF, width, s, queued)
                                  : kvmgpu_memset_d32(S, at, value, width, s, queued);
        if (rc)
            return rc;
    }
    return KVMGPU_CUDA_SUCCESS;
}

#define MEMSET2D(bits, type, size)                                                                               \
    CUAPI CUresult cuMemsetD2D##bits##_v2(CUdeviceptr d, size_t pitch, type v, size_t w, size_t h)               \
    {                                                                                                            \
        return memset2d(d, pitch, v, w, h, size, NULL, 0);                                                       \
    }                                                                                                            \
    CUAPI CUresult cuMemsetD2D##bits##_v2_ptds(CUdeviceptr d, size_t pitch, type v, size_t w, size_t h)          \
    {                                                                                                            \
        return memset2d(d, pitch, v, w, h, size, NULL, 0);                                                       \
    }                                                                                                            \
    CUAPI CUresult cuMemsetD2D##bits##Async(CUdeviceptr d, size_t pitch, type v, size_t w, size_t h, CUstream s) \
    {                                                                                                            \
        return memset2d(d, pitch, v, w, h, size, s, 1);                                                          \
    }                                                                                                            \
    CUAPI CUresult cuMemsetD2D##bits##Async_ptsz(CUdeviceptr d, size_t pitch, type v, size_t w, size_t h,        \
                                                 CUstream s)                                                     \
    {                                                                                                            \
        return memset2d(d, pitch, v, w, h, size, s, 1);                                                          \
    }

MEMSET2D(8, unsigned char, 1)
MEMSET2D(16, unsigned short, 2)
MEMSET2D(32, unsigned int, 4)

/* What the exported cu* functions share: the process's session and the calling thread's
 * current context. */
#ifndef KVMGPU_API_H
#define KVMGPU_API_H

#include "client.h"
#include "cuda_abi.h"

extern struct kvmgpu_client kvmgpu_session;

/* CUDA_SUCCESS when calls can be made now; else NOT_INITIALIZED, DEVICE_UNAVAILABLE (the channel
 * is lost) or INVALID_CONTEXT (no current context on this thread). */
CUresult kvmgpu_ready(void);
/* NOT_INITIALIZED before cuInit, DEVICE_UNAVAILABLE once the channel is lost, else SUCCESS. */
CUresult kvmgpu_initialised(void);
/* A stream handle as the host knows it: CU_STREAM_LEGACY and CU_STREAM_PER_THREAD are the VM's
 * null stream. */
uint64_t kvmgpu_stream(CUstream s);

/* The exported functions other files here call. */
CUresult cuInit(unsigned int flags);
CUresult cuDriverGetVersion(int *version);
CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attrib, CUdevice dev);
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev);
CUresult cuCtxGetCurrent(CUcontext *pctx);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuModuleLoadData(CUmodule *module, const void *image);
CUresult cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name);
CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule module, const char *name);
CUresult cuModuleUnload(CUmodule module);
CUresult cuGetErrorName(CUresult error, const char **text);
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n);
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n);
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n);
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream stream);
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream stream);
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream);
CUresult cuStreamSynchronize(CUstream stream);
CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared, CUstream stream, void **params,
                        void **extra);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize);
CUresult cuMemFree_v2(CUdeviceptr dptr);

/* cuLaunchKernel's launch, without its first step: a kernel cuLaunchKernelEx gave clusters is set
 * back to none (kvmgpu_launch_unclustered, function.c). */
CUresult kvmgpu_launch_kernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                              unsigned int by, unsigned int bz, unsigned int shared, CUstream stream, void **params,
                              void **extra);
CUresult kvmgpu_launch_unclustered(CUfunction f);
/* The name a function was looked up by (module.c), NULL for no function of this process. */
const char *kvmgpu_function_name(uint64_t handle);
/* Whether `p` lies in a device allocation of this process; its start and size (pointer.c). */
int kvmgpu_device_allocation(CUdeviceptr p, CUdeviceptr *start, size_t *size);

/* Stream capture's rules for the other calls (capture.c): CUDA_SUCCESS, or
 * CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED where the calling thread may not make a potentially unsafe
 * call now (an allocation, a free), where a context may not be
 * synchronised (any stream captures), or where `stream` captures or the thread may not wait
 * (a synchronise or query). Each is one atomic load while nothing captures. */
CUresult kvmgpu_capture_unsafe(void);
/* A synchronous copy or memset (legacy stream): CUDA_ERROR_STREAM_CAPTURE_IMPLICIT while a blocking
 * stream captures. */
CUresult kvmgpu_capture_legacy(void);
CUresult kvmgpu_capture_context_sync(void);
CUresult kvmgpu_capture_wait(CUstream stream);
/* `stream` is being destroyed: a capture of it ends (the host drops its graph). */
void kvmgpu_capture_forget(CUstream stream);
/* cuEventRecord and cuStreamWaitEvent, forwarded: a capture's forks (a stream that waits for an
 * event recorded into a capture joins it). */
void kvmgpu_capture_record(CUevent event, CUstream stream);
void kvmgpu_capture_join(CUstream stream, CUevent event);

/* The streams this process created (ordering.c): their flags, for cuStreamGetFlags and for
 * capture.c (whether a stream is blocking: not created CU_STREAM_NON_BLOCKING; unknown: blocking). */
void kvmgpu_stream_created(uint64_t stream, unsigned flags);
void kvmgpu_stream_destroyed(uint64_t stream);
int kvmgpu_stream_blocking(uint64_t stream);

/* The address of a driver symbol (driver_symbols.h) by name: the stub that logs it once and is
 * CUDA_ERROR_NOT_SUPPORTED where this library does not define it (unforwarded.c); NULL for none. */
void *kvmgpu_unforwarded(const char *name);

/* `items` (holding `n` of `size` bytes, room for `*cap`) with room for one more: itself, or moved
 * to a block twice as large (64 at first, `*cap` updated); NULL where memory ran out (`items` and
 * `*cap` unchanged). The growing tables here (allocations, functions, streams, kernels) share it. */
void *kvmgpu_grow(void *items, size_t n, size_t *cap, size_t size);

/* The device allocations of this process, for unified addressing (pointer.c). */
void kvmgpu_device_memory_add(CUdeviceptr start, size_t size);
void kvmgpu_device_memory_remove(CUdeviceptr start);

#endif

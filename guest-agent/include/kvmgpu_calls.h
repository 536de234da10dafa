/* The guest's call stubs (generated from guest-agent/kvmgpu_wire/spec.py by tools/gen_wire.py (make gen): do not edit). */
#ifndef KVMGPU_CALLS_H
#define KVMGPU_CALLS_H

#include <stddef.h>
#include "kvmgpu_wire.h"

struct kvmgpu_client;
/* Sends op `op` with `nargs` arguments and a blob; `queued`: no reply (its error comes with
 * the next synchronising call). Otherwise waits for the reply: its status (a CUresult), its
 * results copied to `results` (`results_size` bytes) and its blob to `reply_blob` (at most
 * `*reply_blob_size` bytes; the size it had is stored back). Defined by the library. */
int kvmgpu_call(struct kvmgpu_client *c, enum kvmgpu_op op, const uint64_t *args, unsigned nargs,
                const void *blob, size_t blob_size, int queued, void *results, size_t results_size,
                void *reply_blob, size_t *reply_blob_size);

/* CTX_SYNCHRONIZE: cuCtxSynchronize: wait for all of the context's work. */
static inline int kvmgpu_ctx_synchronize(struct kvmgpu_client *c)
{
    return kvmgpu_call(c, KVMGPU_OP_CTX_SYNCHRONIZE, NULL, 0, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* MEM_ALLOC: cuMemAlloc_v2: allocate device memory. */
static inline int kvmgpu_mem_alloc(struct kvmgpu_client *c, uint64_t nbytes, struct kvmgpu_results_mem_alloc *out)
{
    const uint64_t args[1] = {nbytes};
    return kvmgpu_call(c, KVMGPU_OP_MEM_ALLOC, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* MEM_FREE: cuMemFree_v2: free an allocation. */
static inline int kvmgpu_mem_free(struct kvmgpu_client *c, uint64_t dptr, int queued)
{
    const uint64_t args[1] = {dptr};
    return kvmgpu_call(c, KVMGPU_OP_MEM_FREE, args, 1, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* MEM_GET_INFO: cuMemGetInfo_v2: the quota's free and total bytes. */
static inline int kvmgpu_mem_get_info(struct kvmgpu_client *c, struct kvmgpu_results_mem_get_info *out)
{
    return kvmgpu_call(c, KVMGPU_OP_MEM_GET_INFO, NULL, 0, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* MEMCPY_HTOD: cuMemcpyHtoD_v2, cuMemcpyHtoDAsync_v2: copy window bytes to device memory. */
static inline int kvmgpu_memcpy_htod(struct kvmgpu_client *c, uint64_t dst, uint64_t offset, uint64_t nbytes, uint64_t stream, int queued)
{
    const uint64_t args[4] = {dst, offset, nbytes, stream};
    return kvmgpu_call(c, KVMGPU_OP_MEMCPY_HTOD, args, 4, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* MEMCPY_DTOH: cuMemcpyDtoH_v2, cuMemcpyDtoHAsync_v2: copy device memory into the window. */
static inline int kvmgpu_memcpy_dtoh(struct kvmgpu_client *c, uint64_t offset, uint64_t src, uint64_t nbytes, uint64_t stream)
{
    const uint64_t args[4] = {offset, src, nbytes, stream};
    return kvmgpu_call(c, KVMGPU_OP_MEMCPY_DTOH, args, 4, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* MEMCPY_DTOD: cuMemcpyDtoD_v2, cuMemcpyDtoDAsync_v2: copy device to device. */
static inline int kvmgpu_memcpy_dtod(struct kvmgpu_client *c, uint64_t dst, uint64_t src, uint64_t nbytes, uint64_t stream, int queued)
{
    const uint64_t args[4] = {dst, src, nbytes, stream};
    return kvmgpu_call(c, KVMGPU_OP_MEMCPY_DTOD, args, 4, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* MEMSET_D8: cuMemsetD8_v2, cuMemsetD8Async: set bytes. */
static inline int kvmgpu_memset_d8(struct kvmgpu_client *c, uint64_t dst, uint64_t value, uint64_t count, uint64_t stream, int queued)
{
    const uint64_t args[4] = {dst, value, count, stream};
    return kvmgpu_call(c, KVMGPU_OP_MEMSET_D8, args, 4, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* MEMSET_D32: cuMemsetD32_v2, cuMemsetD32Async: set 32-bit words. */
static inline int kvmgpu_memset_d32(struct kvmgpu_client *c, uint64_t dst, uint64_t value, uint64_t count, uint64_t stream, int queued)
{
    const uint64_t args[4] = {dst, value, count, stream};
    return kvmgpu_call(c, KVMGPU_OP_MEMSET_D32, args, 4, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* MODULE_LOAD: cuModuleLoadData, cuModuleLoadDataEx, cuModuleLoadFatBinary: load a module image from the window, known by its sha256 (nbytes 0: does the host have it already?); its globals are charged to the quota. */
static inline int kvmgpu_module_load(struct kvmgpu_client *c, uint64_t offset, uint64_t nbytes, const void *blob, size_t blob_size, struct kvmgpu_results_module_load *out)
{
    const uint64_t args[2] = {offset, nbytes};
    return kvmgpu_call(c, KVMGPU_OP_MODULE_LOAD, args, 2, blob, blob_size, 0, out, sizeof *out, NULL, NULL);
}

/* MODULE_UNLOAD: cuModuleUnload: unload a module. */
static inline int kvmgpu_module_unload(struct kvmgpu_client *c, uint64_t module, int queued)
{
    const uint64_t args[1] = {module};
    return kvmgpu_call(c, KVMGPU_OP_MODULE_UNLOAD, args, 1, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* MODULE_GET_FUNCTION: cuModuleGetFunction: a kernel by name; the reply blob has (offset u32, size u32) per parameter. */
static inline int kvmgpu_module_get_function(struct kvmgpu_client *c, uint64_t module, const void *blob, size_t blob_size, struct kvmgpu_results_module_get_function *out, void *reply_blob, size_t *reply_blob_size)
{
    const uint64_t args[1] = {module};
    return kvmgpu_call(c, KVMGPU_OP_MODULE_GET_FUNCTION, args, 1, blob, blob_size, 0, out, sizeof *out, reply_blob, reply_blob_size);
}

/* MODULE_GET_GLOBAL: cuModuleGetGlobal_v2: a module global's address and size. */
static inline int kvmgpu_module_get_global(struct kvmgpu_client *c, uint64_t module, const void *blob, size_t blob_size, struct kvmgpu_results_module_get_global *out)
{
    const uint64_t args[1] = {module};
    return kvmgpu_call(c, KVMGPU_OP_MODULE_GET_GLOBAL, args, 1, blob, blob_size, 0, out, sizeof *out, NULL, NULL);
}

/* LAUNCH: cuLaunchKernel: launch a kernel. */
static inline int kvmgpu_launch(struct kvmgpu_client *c, uint64_t function, uint64_t gx, uint64_t gy, uint64_t gz, uint64_t bx, uint64_t by, uint64_t bz, uint64_t shared, uint64_t stream, const void *blob, size_t blob_size, int queued)
{
    const uint64_t args[9] = {function, gx, gy, gz, bx, by, bz, shared, stream};
    return kvmgpu_call(c, KVMGPU_OP_LAUNCH, args, 9, blob, blob_size, queued, NULL, 0, NULL, NULL);
}

/* STREAM_CREATE: cuStreamCreate: a new stream. */
static inline int kvmgpu_stream_create(struct kvmgpu_client *c, uint64_t flags, struct kvmgpu_results_stream_create *out)
{
    const uint64_t args[1] = {flags};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_CREATE, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* STREAM_DESTROY: cuStreamDestroy_v2: destroy a stream. */
static inline int kvmgpu_stream_destroy(struct kvmgpu_client *c, uint64_t stream, int queued)
{
    const uint64_t args[1] = {stream};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_DESTROY, args, 1, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* STREAM_SYNCHRONIZE: cuStreamSynchronize: wait for a stream's work. */
static inline int kvmgpu_stream_synchronize(struct kvmgpu_client *c, uint64_t stream)
{
    const uint64_t args[1] = {stream};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_SYNCHRONIZE, args, 1, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* STREAM_QUERY: cuStreamQuery: whether a stream's work is done (NOT_READY). */
static inline int kvmgpu_stream_query(struct kvmgpu_client *c, uint64_t stream)
{
    const uint64_t args[1] = {stream};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_QUERY, args, 1, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* EVENT_CREATE: cuEventCreate: a new event. */
static inline int kvmgpu_event_create(struct kvmgpu_client *c, uint64_t flags, struct kvmgpu_results_event_create *out)
{
    const uint64_t args[1] = {flags};
    return kvmgpu_call(c, KVMGPU_OP_EVENT_CREATE, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* EVENT_RECORD: cuEventRecord: record an event on a stream. */
static inline int kvmgpu_event_record(struct kvmgpu_client *c, uint64_t event, uint64_t stream, int queued)
{
    const uint64_t args[2] = {event, stream};
    return kvmgpu_call(c, KVMGPU_OP_EVENT_RECORD, args, 2, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* EVENT_SYNCHRONIZE: cuEventSynchronize: wait for an event. */
static inline int kvmgpu_event_synchronize(struct kvmgpu_client *c, uint64_t event)
{
    const uint64_t args[1] = {event};
    return kvmgpu_call(c, KVMGPU_OP_EVENT_SYNCHRONIZE, args, 1, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* EVENT_QUERY: cuEventQuery: whether an event has happened (NOT_READY). */
static inline int kvmgpu_event_query(struct kvmgpu_client *c, uint64_t event)
{
    const uint64_t args[1] = {event};
    return kvmgpu_call(c, KVMGPU_OP_EVENT_QUERY, args, 1, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* EVENT_ELAPSED: cuEventElapsedTime: milliseconds between two events. */
static inline int kvmgpu_event_elapsed(struct kvmgpu_client *c, uint64_t start, uint64_t end, struct kvmgpu_results_event_elapsed *out)
{
    const uint64_t args[2] = {start, end};
    return kvmgpu_call(c, KVMGPU_OP_EVENT_ELAPSED, args, 2, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* EVENT_DESTROY: cuEventDestroy_v2: destroy an event. */
static inline int kvmgpu_event_destroy(struct kvmgpu_client *c, uint64_t event, int queued)
{
    const uint64_t args[1] = {event};
    return kvmgpu_call(c, KVMGPU_OP_EVENT_DESTROY, args, 1, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* FENCE: (the guest's staging ring): wait until no queued work still reads or writes this session's window. */
static inline int kvmgpu_fence(struct kvmgpu_client *c)
{
    return kvmgpu_call(c, KVMGPU_OP_FENCE, NULL, 0, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* MEMCPY_HTOD_STAGED: cuMemcpyHtoD_v2 (staged): a synchronous HtoD the guest does not wait for: the host copies in null-stream order, waits, then stores the call's seq (u32) at window offset `done`. */
static inline int kvmgpu_memcpy_htod_staged(struct kvmgpu_client *c, uint64_t dst, uint64_t offset, uint64_t nbytes, uint64_t done, int queued)
{
    const uint64_t args[4] = {dst, offset, nbytes, done};
    return kvmgpu_call(c, KVMGPU_OP_MEMCPY_HTOD_STAGED, args, 4, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* MEMCPY_DTOH_PIECES: cuMemcpyDtoH_v2 (in pieces): a DtoH in pieces of about `piece` bytes; after each the host stores the bytes landed (u32) at window offset `landed`. */
static inline int kvmgpu_memcpy_dtoh_pieces(struct kvmgpu_client *c, uint64_t offset, uint64_t src, uint64_t nbytes, uint64_t stream, uint64_t piece, uint64_t landed)
{
    const uint64_t args[6] = {offset, src, nbytes, stream, piece, landed};
    return kvmgpu_call(c, KVMGPU_OP_MEMCPY_DTOH_PIECES, args, 6, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* CTX_GET_FLAGS: cuCtxGetFlags: the flags of the VM's context on the host. */
static inline int kvmgpu_ctx_get_flags(struct kvmgpu_client *c, struct kvmgpu_results_ctx_get_flags *out)
{
    return kvmgpu_call(c, KVMGPU_OP_CTX_GET_FLAGS, NULL, 0, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* DEVICE_GET_PCI_BUS_ID: cuDeviceGetPCIBusId: the GPU's PCI bus id, domain:bus:device.function in hex (the guest checks the device: its only one is 0). */
static inline int kvmgpu_device_get_pci_bus_id(struct kvmgpu_client *c, struct kvmgpu_results_device_get_pci_bus_id *out)
{
    return kvmgpu_call(c, KVMGPU_OP_DEVICE_GET_PCI_BUS_ID, NULL, 0, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* STREAM_GET_PRIORITY: cuStreamGetPriority: a stream's priority. */
static inline int kvmgpu_stream_get_priority(struct kvmgpu_client *c, uint64_t stream, struct kvmgpu_results_stream_get_priority *out)
{
    const uint64_t args[1] = {stream};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_GET_PRIORITY, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* STREAM_WAIT_EVENT: cuStreamWaitEvent: make a stream's later work wait for an event's work (during a capture: a stream that waits for an event recorded in it joins that capture, as natively). */
static inline int kvmgpu_stream_wait_event(struct kvmgpu_client *c, uint64_t stream, uint64_t event, uint64_t flags, int queued)
{
    const uint64_t args[3] = {stream, event, flags};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_WAIT_EVENT, args, 3, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* VGPU_PROCESSES: nvmlDeviceGetComputeRunningProcesses: the VM's guest processes with CUDA sessions (not monitors), by the pid each HELLO gave, and the device memory each holds; at most MAX_PROCESSES. */
static inline int kvmgpu_vgpu_processes(struct kvmgpu_client *c, struct kvmgpu_results_vgpu_processes *out, void *reply_blob, size_t *reply_blob_size)
{
    return kvmgpu_call(c, KVMGPU_OP_VGPU_PROCESSES, NULL, 0, NULL, 0, 0, out, sizeof *out, reply_blob, reply_blob_size);
}

/* VGPU_UTILIZATION: nvmlDeviceGetUtilizationRates: this VM's GPU time as a percent of the wall time over the last second or more (the compute gate's meter; 0 where the VM has no gate); memory: 0, not measured. */
static inline int kvmgpu_vgpu_utilization(struct kvmgpu_client *c, struct kvmgpu_results_vgpu_utilization *out)
{
    return kvmgpu_call(c, KVMGPU_OP_VGPU_UTILIZATION, NULL, 0, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* STREAM_BEGIN_CAPTURE: cuStreamBeginCapture_v2: start capturing a stream's work into a graph (on the host always in relaxed mode: the guest keeps the modes of its threads). */
static inline int kvmgpu_stream_begin_capture(struct kvmgpu_client *c, uint64_t stream)
{
    const uint64_t args[1] = {stream};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_BEGIN_CAPTURE, args, 1, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* STREAM_END_CAPTURE: cuStreamEndCapture: end a stream's capture: the graph of the work captured (an invalidated capture ends with CUDA_ERROR_STREAM_CAPTURE_INVALIDATED and no graph). */
static inline int kvmgpu_stream_end_capture(struct kvmgpu_client *c, uint64_t stream, struct kvmgpu_results_stream_end_capture *out)
{
    const uint64_t args[1] = {stream};
    return kvmgpu_call(c, KVMGPU_OP_STREAM_END_CAPTURE, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* GRAPH_INSTANTIATE: cuGraphInstantiateWithFlags, cuGraphInstantiateWithParams: an executable graph of a graph. */
static inline int kvmgpu_graph_instantiate(struct kvmgpu_client *c, uint64_t graph, uint64_t flags, struct kvmgpu_results_graph_instantiate *out)
{
    const uint64_t args[2] = {graph, flags};
    return kvmgpu_call(c, KVMGPU_OP_GRAPH_INSTANTIATE, args, 2, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* GRAPH_LAUNCH: cuGraphLaunch: launch an executable graph on a stream (the compute gate meters it as a kernel launch: the GPU time it takes is charged at the wait that follows it). */
static inline int kvmgpu_graph_launch(struct kvmgpu_client *c, uint64_t graph_exec, uint64_t stream, int queued)
{
    const uint64_t args[2] = {graph_exec, stream};
    return kvmgpu_call(c, KVMGPU_OP_GRAPH_LAUNCH, args, 2, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* GRAPH_UPLOAD: cuGraphUpload: upload an executable graph ahead of its launch. */
static inline int kvmgpu_graph_upload(struct kvmgpu_client *c, uint64_t graph_exec, uint64_t stream, int queued)
{
    const uint64_t args[2] = {graph_exec, stream};
    return kvmgpu_call(c, KVMGPU_OP_GRAPH_UPLOAD, args, 2, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* GRAPH_EXEC_DESTROY: cuGraphExecDestroy: destroy an executable graph. */
static inline int kvmgpu_graph_exec_destroy(struct kvmgpu_client *c, uint64_t graph_exec, int queued)
{
    const uint64_t args[1] = {graph_exec};
    return kvmgpu_call(c, KVMGPU_OP_GRAPH_EXEC_DESTROY, args, 1, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* GRAPH_DESTROY: cuGraphDestroy: destroy a graph. */
static inline int kvmgpu_graph_destroy(struct kvmgpu_client *c, uint64_t graph, int queued)
{
    const uint64_t args[1] = {graph};
    return kvmgpu_call(c, KVMGPU_OP_GRAPH_DESTROY, args, 1, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* GRAPH_GET_NODE_COUNT: cuGraphGetNodes (the count: nodes NULL): how many nodes a graph has (PyTorch asks after every capture; a VM is given no node handles). */
static inline int kvmgpu_graph_get_node_count(struct kvmgpu_client *c, uint64_t graph, struct kvmgpu_results_graph_get_node_count *out)
{
    const uint64_t args[1] = {graph};
    return kvmgpu_call(c, KVMGPU_OP_GRAPH_GET_NODE_COUNT, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* WINDOW_DEVICE_POINTER: cuMemHostGetDevicePointer (the session's window): the device address of the session's window (NOT_SUPPORTED where the backend cannot map host memory into the device's address space: the sim). */
static inline int kvmgpu_window_device_pointer(struct kvmgpu_client *c, struct kvmgpu_results_window_device_pointer *out)
{
    return kvmgpu_call(c, KVMGPU_OP_WINDOW_DEVICE_POINTER, NULL, 0, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* FUNC_GET_ATTRIBUTES: cuFuncGetAttribute, cuKernelGetAttribute: every attribute of a kernel at once (the guest keeps them: they change only by its own FUNC_SET_ATTRIBUTE). */
static inline int kvmgpu_func_get_attributes(struct kvmgpu_client *c, uint64_t function, struct kvmgpu_results_func_get_attributes *out)
{
    const uint64_t args[1] = {function};
    return kvmgpu_call(c, KVMGPU_OP_FUNC_GET_ATTRIBUTES, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* FUNC_SET_ATTRIBUTE: cuFuncSetAttribute, cuKernelSetAttribute: set a kernel's attribute (max dynamic shared memory, carveout, cluster preferences). */
static inline int kvmgpu_func_set_attribute(struct kvmgpu_client *c, uint64_t function, uint64_t attribute, uint64_t value)
{
    const uint64_t args[3] = {function, attribute, value};
    return kvmgpu_call(c, KVMGPU_OP_FUNC_SET_ATTRIBUTE, args, 3, NULL, 0, 0, NULL, 0, NULL, NULL);
}

/* OCCUPANCY_MAX_BLOCKS: cuOccupancyMaxActiveBlocksPerMultiprocessor(WithFlags): how many blocks of a kernel fit one multiprocessor (the guest keeps each answer). */
static inline int kvmgpu_occupancy_max_blocks(struct kvmgpu_client *c, uint64_t function, uint64_t block, uint64_t shared, uint64_t flags, struct kvmgpu_results_occupancy_max_blocks *out)
{
    const uint64_t args[4] = {function, block, shared, flags};
    return kvmgpu_call(c, KVMGPU_OP_OCCUPANCY_MAX_BLOCKS, args, 4, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* OCCUPANCY_AVAILABLE_SMEM: cuOccupancyAvailableDynamicSMemPerBlock: the dynamic shared memory a block may have with `blocks` blocks a multiprocessor. */
static inline int kvmgpu_occupancy_available_smem(struct kvmgpu_client *c, uint64_t function, uint64_t blocks, uint64_t block, struct kvmgpu_results_occupancy_available_smem *out)
{
    const uint64_t args[3] = {function, blocks, block};
    return kvmgpu_call(c, KVMGPU_OP_OCCUPANCY_AVAILABLE_SMEM, args, 3, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* MEMSET_D16: cuMemsetD16_v2, cuMemsetD16Async: set 16-bit words. */
static inline int kvmgpu_memset_d16(struct kvmgpu_client *c, uint64_t dst, uint64_t value, uint64_t count, uint64_t stream, int queued)
{
    const uint64_t args[4] = {dst, value, count, stream};
    return kvmgpu_call(c, KVMGPU_OP_MEMSET_D16, args, 4, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* CTX_GET_LIMIT: cuCtxGetLimit: a limit of the VM's context (stack size, printf FIFO, malloc heap, ...). */
static inline int kvmgpu_ctx_get_limit(struct kvmgpu_client *c, uint64_t limit, struct kvmgpu_results_ctx_get_limit *out)
{
    const uint64_t args[1] = {limit};
    return kvmgpu_call(c, KVMGPU_OP_CTX_GET_LIMIT, args, 1, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* MEMCPY_2D: cuMemcpy2D(Async)_v2, cuMemcpy3D(Async)_v2 (device to device): copy `height` rows of `width` bytes between device ranges `pitch` bytes apart. */
static inline int kvmgpu_memcpy_2d(struct kvmgpu_client *c, uint64_t dst, uint64_t dpitch, uint64_t src, uint64_t spitch, uint64_t width, uint64_t height, uint64_t stream, int queued)
{
    const uint64_t args[7] = {dst, dpitch, src, spitch, width, height, stream};
    return kvmgpu_call(c, KVMGPU_OP_MEMCPY_2D, args, 7, NULL, 0, queued, NULL, 0, NULL, NULL);
}

/* TENSOR_MAP_ENCODE_TILED: cuTensorMapEncodeTiled: a tiled tensor's map (the 128-byte TMA descriptor Hopper's cuBLAS kernels take), of a tensor in the session's memory. */
static inline int kvmgpu_tensor_map_encode_tiled(struct kvmgpu_client *c, uint64_t dtype, uint64_t rank, uint64_t address, uint64_t interleave, uint64_t swizzle, uint64_t l2, uint64_t fill, const void *blob, size_t blob_size, struct kvmgpu_results_tensor_map_encode_tiled *out)
{
    const uint64_t args[7] = {dtype, rank, address, interleave, swizzle, l2, fill};
    return kvmgpu_call(c, KVMGPU_OP_TENSOR_MAP_ENCODE_TILED, args, 7, blob, blob_size, 0, out, sizeof *out, NULL, NULL);
}

/* OCCUPANCY_MAX_CLUSTERS: cuOccupancyMaxActiveClusters: how many clusters of a launch's shape can be resident at once (Hopper's persistent kernels size their grids by it). */
static inline int kvmgpu_occupancy_max_clusters(struct kvmgpu_client *c, uint64_t function, uint64_t gx, uint64_t gy, uint64_t gz, uint64_t bx, uint64_t by, uint64_t bz, uint64_t shared, uint64_t cx, uint64_t cy, uint64_t cz, struct kvmgpu_results_occupancy_max_clusters *out)
{
    const uint64_t args[11] = {function, gx, gy, gz, bx, by, bz, shared, cx, cy, cz};
    return kvmgpu_call(c, KVMGPU_OP_OCCUPANCY_MAX_CLUSTERS, args, 11, NULL, 0, 0, out, sizeof *out, NULL, NULL);
}

/* TENSOR_MAP_ENCODE_IM2COL: cuTensorMapEncodeIm2col: an im2col tensor map (the TMA descriptor of Hopper's convolution kernels), of a tensor in the session's memory. */
static inline int kvmgpu_tensor_map_encode_im2col(struct kvmgpu_client *c, uint64_t dtype, uint64_t rank, uint64_t address, uint64_t interleave, uint64_t swizzle, uint64_t l2, uint64_t fill, const void *blob, size_t blob_size, struct kvmgpu_results_tensor_map_encode_im2col *out)
{
    const uint64_t args[7] = {dtype, rank, address, interleave, swizzle, l2, fill};
    return kvmgpu_call(c, KVMGPU_OP_TENSOR_MAP_ENCODE_IM2COL, args, 7, blob, blob_size, 0, out, sizeof *out, NULL, NULL);
}

#endif

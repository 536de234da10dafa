/* kvmgpu's wire format (generated from guest-agent/kvmgpu_wire/spec.py by tools/gen_wire.py (make gen): do not edit). */
#ifndef KVMGPU_WIRE_H
#define KVMGPU_WIRE_H

#include <stdint.h>

#define KVMGPU_PROTOCOL_VERSION 11
#define KVMGPU_MAGIC 0x474Bu
#define KVMGPU_QUEUED 0x01u
#define KVMGPU_MAX_ARG_BYTES 32764
#define KVMGPU_MAX_NAME 1024
#define KVMGPU_HANDSHAKE_MAX 16384
#define KVMGPU_DEFAULT_MAX_FRAME 65536
#define KVMGPU_MAX_ERROR_TEXT 512
#define KVMGPU_WINDOW_ALIGN 4096
#define KVMGPU_MAILBOX_BYTES 4096
#define KVMGPU_MAILBOX_MIN_WINDOW 65536
#define KVMGPU_MAILBOX_POST 0
#define KVMGPU_MAILBOX_SIZE 1
#define KVMGPU_MAILBOX_ASLEEP 2
#define KVMGPU_MAILBOX_ANSWER 16
#define KVMGPU_MAILBOX_LENGTH 17
#define KVMGPU_MAILBOX_AWAKE 18
#define KVMGPU_MAILBOX_HEAD 128
#define KVMGPU_MAILBOX_REQUEST_MAX 1984
#define KVMGPU_MAX_PROCESSES 255

/* Every frame: this header (little-endian), then `length` bytes of payload. */
struct kvmgpu_frame_header {
    uint16_t magic;
    uint8_t kind;
    uint8_t flags;
    uint32_t session;
    uint32_t seq;
    uint32_t length;
};
_Static_assert(sizeof(struct kvmgpu_frame_header) == 16, "frame header");

enum kvmgpu_kind {
    KVMGPU_HELLO = 1,
    KVMGPU_WELCOME = 2,
    KVMGPU_CALL = 3,
    KVMGPU_REPLY = 4,
    KVMGPU_GOODBYE = 5,
    KVMGPU_DOORBELL = 6,
};

/* A CALL's payload starts with this; `nargs` u64 arguments follow, then the blob. */
struct kvmgpu_call_head {
    uint16_t op;
    uint16_t nargs;
};
_Static_assert(sizeof(struct kvmgpu_call_head) == 4, "call head");

enum kvmgpu_op {
    KVMGPU_OP_CTX_SYNCHRONIZE = 1, /* cuCtxSynchronize */
    KVMGPU_OP_MEM_ALLOC = 2, /* cuMemAlloc_v2 */
    KVMGPU_OP_MEM_FREE = 3, /* cuMemFree_v2 */
    KVMGPU_OP_MEM_GET_INFO = 4, /* cuMemGetInfo_v2 */
    KVMGPU_OP_MEMCPY_HTOD = 5, /* cuMemcpyHtoD_v2, cuMemcpyHtoDAsync_v2 */
    KVMGPU_OP_MEMCPY_DTOH = 6, /* cuMemcpyDtoH_v2, cuMemcpyDtoHAsync_v2 */
    KVMGPU_OP_MEMCPY_DTOD = 7, /* cuMemcpyDtoD_v2, cuMemcpyDtoDAsync_v2 */
    KVMGPU_OP_MEMSET_D8 = 8, /* cuMemsetD8_v2, cuMemsetD8Async */
    KVMGPU_OP_MEMSET_D32 = 9, /* cuMemsetD32_v2, cuMemsetD32Async */
    KVMGPU_OP_MODULE_LOAD = 10, /* cuModuleLoadData, cuModuleLoadDataEx, cuModuleLoadFatBinary */
    KVMGPU_OP_MODULE_UNLOAD = 11, /* cuModuleUnload */
    KVMGPU_OP_MODULE_GET_FUNCTION = 12, /* cuModuleGetFunction */
    KVMGPU_OP_MODULE_GET_GLOBAL = 13, /* cuModuleGetGlobal_v2 */
    KVMGPU_OP_LAUNCH = 14, /* cuLaunchKernel */
    KVMGPU_OP_STREAM_CREATE = 15, /* cuStreamCreate */
    KVMGPU_OP_STREAM_DESTROY = 16, /* cuStreamDestroy_v2 */
    KVMGPU_OP_STREAM_SYNCHRONIZE = 17, /* cuStreamSynchronize */
    KVMGPU_OP_STREAM_QUERY = 18, /* cuStreamQuery */
    KVMGPU_OP_EVENT_CREATE = 19, /* cuEventCreate */
    KVMGPU_OP_EVENT_RECORD = 20, /* cuEventRecord */
    KVMGPU_OP_EVENT_SYNCHRONIZE = 21, /* cuEventSynchronize */
    KVMGPU_OP_EVENT_QUERY = 22, /* cuEventQuery */
    KVMGPU_OP_EVENT_ELAPSED = 23, /* cuEventElapsedTime */
    KVMGPU_OP_EVENT_DESTROY = 24, /* cuEventDestroy_v2 */
    KVMGPU_OP_FENCE = 25, /* (the guest's staging ring) */
    KVMGPU_OP_MEMCPY_HTOD_STAGED = 26, /* cuMemcpyHtoD_v2 (staged) */
    KVMGPU_OP_MEMCPY_DTOH_PIECES = 27, /* cuMemcpyDtoH_v2 (in pieces) */
    KVMGPU_OP_CTX_GET_FLAGS = 28, /* cuCtxGetFlags */
    KVMGPU_OP_DEVICE_GET_PCI_BUS_ID = 29, /* cuDeviceGetPCIBusId */
    KVMGPU_OP_STREAM_GET_PRIORITY = 30, /* cuStreamGetPriority */
    KVMGPU_OP_STREAM_WAIT_EVENT = 31, /* cuStreamWaitEvent */
    KVMGPU_OP_VGPU_PROCESSES = 40, /* nvmlDeviceGetComputeRunningProcesses */
    KVMGPU_OP_VGPU_UTILIZATION = 41, /* nvmlDeviceGetUtilizationRates */
    KVMGPU_OP_STREAM_BEGIN_CAPTURE = 80, /* cuStreamBeginCapture_v2 */
    KVMGPU_OP_STREAM_END_CAPTURE = 81, /* cuStreamEndCapture */
    KVMGPU_OP_GRAPH_INSTANTIATE = 82, /* cuGraphInstantiateWithFlags, cuGraphInstantiateWithParams */
    KVMGPU_OP_GRAPH_LAUNCH = 83, /* cuGraphLaunch */
    KVMGPU_OP_GRAPH_UPLOAD = 84, /* cuGraphUpload */
    KVMGPU_OP_GRAPH_EXEC_DESTROY = 85, /* cuGraphExecDestroy */
    KVMGPU_OP_GRAPH_DESTROY = 86, /* cuGraphDestroy */
    KVMGPU_OP_GRAPH_GET_NODE_COUNT = 87, /* cuGraphGetNodes (the count: nodes NULL) */
    KVMGPU_OP_WINDOW_DEVICE_POINTER = 88, /* cuMemHostGetDevicePointer (the session's window) */
    KVMGPU_OP_FUNC_GET_ATTRIBUTES = 50, /* cuFuncGetAttribute, cuKernelGetAttribute */
    KVMGPU_OP_FUNC_SET_ATTRIBUTE = 51, /* cuFuncSetAttribute, cuKernelSetAttribute */
    KVMGPU_OP_OCCUPANCY_MAX_BLOCKS = 52, /* cuOccupancyMaxActiveBlocksPerMultiprocessor(WithFlags) */
    KVMGPU_OP_OCCUPANCY_AVAILABLE_SMEM = 53, /* cuOccupancyAvailableDynamicSMemPerBlock */
    KVMGPU_OP_MEMSET_D16 = 54, /* cuMemsetD16_v2, cuMemsetD16Async */
    KVMGPU_OP_CTX_GET_LIMIT = 55, /* cuCtxGetLimit */
    KVMGPU_OP_MEMCPY_2D = 56, /* cuMemcpy2D(Async)_v2, cuMemcpy3D(Async)_v2 (device to device) */
    KVMGPU_OP_TENSOR_MAP_ENCODE_TILED = 57, /* cuTensorMapEncodeTiled */
    KVMGPU_OP_OCCUPANCY_MAX_CLUSTERS = 58, /* cuOccupancyMaxActiveClusters */
    KVMGPU_OP_TENSOR_MAP_ENCODE_IM2COL = 59, /* cuTensorMapEncodeIm2col */
};

/* Each op's arguments, in order (copied after the call head: not aligned there), its
 * most blob bytes, whether it may be queued, and its success reply's results (packed). */
#define KVMGPU_CTX_SYNCHRONIZE_NARGS 0
#define KVMGPU_CTX_SYNCHRONIZE_BLOB_MAX 0
#define KVMGPU_CTX_SYNCHRONIZE_QUEUEABLE 0
#define KVMGPU_CTX_SYNCHRONIZE_SYNCHRONISING 1

#define KVMGPU_MEM_ALLOC_NARGS 1
#define KVMGPU_MEM_ALLOC_BLOB_MAX 0
#define KVMGPU_MEM_ALLOC_QUEUEABLE 0
#define KVMGPU_MEM_ALLOC_SYNCHRONISING 0
struct kvmgpu_args_mem_alloc {
    uint64_t nbytes;
};
_Static_assert(sizeof(struct kvmgpu_args_mem_alloc) == 8, "MEM_ALLOC args");
struct __attribute__((packed)) kvmgpu_results_mem_alloc {
    uint64_t dptr;
};
_Static_assert(sizeof(struct kvmgpu_results_mem_alloc) == 8, "MEM_ALLOC results");

#define KVMGPU_MEM_FREE_NARGS 1
#define KVMGPU_MEM_FREE_BLOB_MAX 0
#define KVMGPU_MEM_FREE_QUEUEABLE 1
#define KVMGPU_MEM_FREE_SYNCHRONISING 0
struct kvmgpu_args_mem_free {
    uint64_t dptr;
};
_Static_assert(sizeof(struct kvmgpu_args_mem_free) == 8, "MEM_FREE args");

#define KVMGPU_MEM_GET_INFO_NARGS 0
#define KVMGPU_MEM_GET_INFO_BLOB_MAX 0
#define KVMGPU_MEM_GET_INFO_QUEUEABLE 0
#define KVMGPU_MEM_GET_INFO_SYNCHRONISING 0
struct __attribute__((packed)) kvmgpu_results_mem_get_info {
    uint64_t free;
    uint64_t total;
};
_Static_assert(sizeof(struct kvmgpu_results_mem_get_info) == 16, "MEM_GET_INFO results");

#define KVMGPU_MEMCPY_HTOD_NARGS 4
#define KVMGPU_MEMCPY_HTOD_BLOB_MAX 0
#define KVMGPU_MEMCPY_HTOD_QUEUEABLE 1
#define KVMGPU_MEMCPY_HTOD_SYNCHRONISING 1
struct kvmgpu_args_memcpy_htod {
    uint64_t dst;
    uint64_t offset;
    uint64_t nbytes;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_memcpy_htod) == 32, "MEMCPY_HTOD args");

#define KVMGPU_MEMCPY_DTOH_NARGS 4
#define KVMGPU_MEMCPY_DTOH_BLOB_MAX 0
#define KVMGPU_MEMCPY_DTOH_QUEUEABLE 0
#define KVMGPU_MEMCPY_DTOH_SYNCHRONISING 1
struct kvmgpu_args_memcpy_dtoh {
    uint64_t offset;
    uint64_t src;
    uint64_t nbytes;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_memcpy_dtoh) == 32, "MEMCPY_DTOH args");

#define KVMGPU_MEMCPY_DTOD_NARGS 4
#define KVMGPU_MEMCPY_DTOD_BLOB_MAX 0
#define KVMGPU_MEMCPY_DTOD_QUEUEABLE 1
#define KVMGPU_MEMCPY_DTOD_SYNCHRONISING 1
struct kvmgpu_args_memcpy_dtod {
    uint64_t dst;
    uint64_t src;
    uint64_t nbytes;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_memcpy_dtod) == 32, "MEMCPY_DTOD args");

#define KVMGPU_MEMSET_D8_NARGS 4
#define KVMGPU_MEMSET_D8_BLOB_MAX 0
#define KVMGPU_MEMSET_D8_QUEUEABLE 1
#define KVMGPU_MEMSET_D8_SYNCHRONISING 1
struct kvmgpu_args_memset_d8 {
    uint64_t dst;
    uint64_t value;
    uint64_t count;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_memset_d8) == 32, "MEMSET_D8 args");

#define KVMGPU_MEMSET_D32_NARGS 4
#define KVMGPU_MEMSET_D32_BLOB_MAX 0
#define KVMGPU_MEMSET_D32_QUEUEABLE 1
#define KVMGPU_MEMSET_D32_SYNCHRONISING 1
struct kvmgpu_args_memset_d32 {
    uint64_t dst;
    uint64_t value;
    uint64_t count;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_memset_d32) == 32, "MEMSET_D32 args");

#define KVMGPU_MODULE_LOAD_NARGS 2
#define KVMGPU_MODULE_LOAD_BLOB_MAX 32
#define KVMGPU_MODULE_LOAD_QUEUEABLE 0
#define KVMGPU_MODULE_LOAD_SYNCHRONISING 0
struct kvmgpu_args_module_load {
    uint64_t offset;
    uint64_t nbytes;
};
_Static_assert(sizeof(struct kvmgpu_args_module_load) == 16, "MODULE_LOAD args");
struct __attribute__((packed)) kvmgpu_results_module_load {
    uint64_t module;
};
_Static_assert(sizeof(struct kvmgpu_results_module_load) == 8, "MODULE_LOAD results");

#define KVMGPU_MODULE_UNLOAD_NARGS 1
#define KVMGPU_MODULE_UNLOAD_BLOB_MAX 0
#define KVMGPU_MODULE_UNLOAD_QUEUEABLE 1
#define KVMGPU_MODULE_UNLOAD_SYNCHRONISING 0
struct kvmgpu_args_module_unload {
    uint64_t module;
};
_Static_assert(sizeof(struct kvmgpu_args_module_unload) == 8, "MODULE_UNLOAD args");

#define KVMGPU_MODULE_GET_FUNCTION_NARGS 1
#define KVMGPU_MODULE_GET_FUNCTION_BLOB_MAX 1024
#define KVMGPU_MODULE_GET_FUNCTION_QUEUEABLE 0
#define KVMGPU_MODULE_GET_FUNCTION_SYNCHRONISING 0
struct kvmgpu_args_module_get_function {
    uint64_t module;
};
_Static_assert(sizeof(struct kvmgpu_args_module_get_function) == 8, "MODULE_GET_FUNCTION args");
struct __attribute__((packed)) kvmgpu_results_module_get_function {
    uint64_t function;
    uint64_t nparams;
};
_Static_assert(sizeof(struct kvmgpu_results_module_get_function) == 16, "MODULE_GET_FUNCTION results");

#define KVMGPU_MODULE_GET_GLOBAL_NARGS 1
#define KVMGPU_MODULE_GET_GLOBAL_BLOB_MAX 1024
#define KVMGPU_MODULE_GET_GLOBAL_QUEUEABLE 0
#define KVMGPU_MODULE_GET_GLOBAL_SYNCHRONISING 0
struct kvmgpu_args_module_get_global {
    uint64_t module;
};
_Static_assert(sizeof(struct kvmgpu_args_module_get_global) == 8, "MODULE_GET_GLOBAL args");
struct __attribute__((packed)) kvmgpu_results_module_get_global {
    uint64_t dptr;
    uint64_t nbytes;
};
_Static_assert(sizeof(struct kvmgpu_results_module_get_global) == 16, "MODULE_GET_GLOBAL results");

#define KVMGPU_LAUNCH_NARGS 9
#define KVMGPU_LAUNCH_BLOB_MAX 32764
#define KVMGPU_LAUNCH_QUEUEABLE 1
#define KVMGPU_LAUNCH_SYNCHRONISING 0
struct kvmgpu_args_launch {
    uint64_t function;
    uint64_t gx;
    uint64_t gy;
    uint64_t gz;
    uint64_t bx;
    uint64_t by;
    uint64_t bz;
    uint64_t shared;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_launch) == 72, "LAUNCH args");

#define KVMGPU_STREAM_CREATE_NARGS 1
#define KVMGPU_STREAM_CREATE_BLOB_MAX 0
#define KVMGPU_STREAM_CREATE_QUEUEABLE 0
#define KVMGPU_STREAM_CREATE_SYNCHRONISING 0
struct kvmgpu_args_stream_create {
    uint64_t flags;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_create) == 8, "STREAM_CREATE args");
struct __attribute__((packed)) kvmgpu_results_stream_create {
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_results_stream_create) == 8, "STREAM_CREATE results");

#define KVMGPU_STREAM_DESTROY_NARGS 1
#define KVMGPU_STREAM_DESTROY_BLOB_MAX 0
#define KVMGPU_STREAM_DESTROY_QUEUEABLE 1
#define KVMGPU_STREAM_DESTROY_SYNCHRONISING 0
struct kvmgpu_args_stream_destroy {
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_destroy) == 8, "STREAM_DESTROY args");

#define KVMGPU_STREAM_SYNCHRONIZE_NARGS 1
#define KVMGPU_STREAM_SYNCHRONIZE_BLOB_MAX 0
#define KVMGPU_STREAM_SYNCHRONIZE_QUEUEABLE 0
#define KVMGPU_STREAM_SYNCHRONIZE_SYNCHRONISING 1
struct kvmgpu_args_stream_synchronize {
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_synchronize) == 8, "STREAM_SYNCHRONIZE args");

#define KVMGPU_STREAM_QUERY_NARGS 1
#define KVMGPU_STREAM_QUERY_BLOB_MAX 0
#define KVMGPU_STREAM_QUERY_QUEUEABLE 0
#define KVMGPU_STREAM_QUERY_SYNCHRONISING 1
struct kvmgpu_args_stream_query {
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_query) == 8, "STREAM_QUERY args");

#define KVMGPU_EVENT_CREATE_NARGS 1
#define KVMGPU_EVENT_CREATE_BLOB_MAX 0
#define KVMGPU_EVENT_CREATE_QUEUEABLE 0
#define KVMGPU_EVENT_CREATE_SYNCHRONISING 0
struct kvmgpu_args_event_create {
    uint64_t flags;
};
_Static_assert(sizeof(struct kvmgpu_args_event_create) == 8, "EVENT_CREATE args");
struct __attribute__((packed)) kvmgpu_results_event_create {
    uint64_t event;
};
_Static_assert(sizeof(struct kvmgpu_results_event_create) == 8, "EVENT_CREATE results");

#define KVMGPU_EVENT_RECORD_NARGS 2
#define KVMGPU_EVENT_RECORD_BLOB_MAX 0
#define KVMGPU_EVENT_RECORD_QUEUEABLE 1
#define KVMGPU_EVENT_RECORD_SYNCHRONISING 0
struct kvmgpu_args_event_record {
    uint64_t event;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_event_record) == 16, "EVENT_RECORD args");

#define KVMGPU_EVENT_SYNCHRONIZE_NARGS 1
#define KVMGPU_EVENT_SYNCHRONIZE_BLOB_MAX 0
#define KVMGPU_EVENT_SYNCHRONIZE_QUEUEABLE 0
#define KVMGPU_EVENT_SYNCHRONIZE_SYNCHRONISING 1
struct kvmgpu_args_event_synchronize {
    uint64_t event;
};
_Static_assert(sizeof(struct kvmgpu_args_event_synchronize) == 8, "EVENT_SYNCHRONIZE args");

#define KVMGPU_EVENT_QUERY_NARGS 1
#define KVMGPU_EVENT_QUERY_BLOB_MAX 0
#define KVMGPU_EVENT_QUERY_QUEUEABLE 0
#define KVMGPU_EVENT_QUERY_SYNCHRONISING 1
struct kvmgpu_args_event_query {
    uint64_t event;
};
_Static_assert(sizeof(struct kvmgpu_args_event_query) == 8, "EVENT_QUERY args");

#define KVMGPU_EVENT_ELAPSED_NARGS 2
#define KVMGPU_EVENT_ELAPSED_BLOB_MAX 0
#define KVMGPU_EVENT_ELAPSED_QUEUEABLE 0
#define KVMGPU_EVENT_ELAPSED_SYNCHRONISING 0
struct kvmgpu_args_event_elapsed {
    uint64_t start;
    uint64_t end;
};
_Static_assert(sizeof(struct kvmgpu_args_event_elapsed) == 16, "EVENT_ELAPSED args");
struct __attribute__((packed)) kvmgpu_results_event_elapsed {
    float ms;
};
_Static_assert(sizeof(struct kvmgpu_results_event_elapsed) == 4, "EVENT_ELAPSED results");

#define KVMGPU_EVENT_DESTROY_NARGS 1
#define KVMGPU_EVENT_DESTROY_BLOB_MAX 0
#define KVMGPU_EVENT_DESTROY_QUEUEABLE 1
#define KVMGPU_EVENT_DESTROY_SYNCHRONISING 0
struct kvmgpu_args_event_destroy {
    uint64_t event;
};
_Static_assert(sizeof(struct kvmgpu_args_event_destroy) == 8, "EVENT_DESTROY args");

#define KVMGPU_FENCE_NARGS 0
#define KVMGPU_FENCE_BLOB_MAX 0
#define KVMGPU_FENCE_QUEUEABLE 0
#define KVMGPU_FENCE_SYNCHRONISING 1

#define KVMGPU_MEMCPY_HTOD_STAGED_NARGS 4
#define KVMGPU_MEMCPY_HTOD_STAGED_BLOB_MAX 0
#define KVMGPU_MEMCPY_HTOD_STAGED_QUEUEABLE 1
#define KVMGPU_MEMCPY_HTOD_STAGED_SYNCHRONISING 0
struct kvmgpu_args_memcpy_htod_staged {
    uint64_t dst;
    uint64_t offset;
    uint64_t nbytes;
    uint64_t done;
};
_Static_assert(sizeof(struct kvmgpu_args_memcpy_htod_staged) == 32, "MEMCPY_HTOD_STAGED args");

#define KVMGPU_MEMCPY_DTOH_PIECES_NARGS 6
#define KVMGPU_MEMCPY_DTOH_PIECES_BLOB_MAX 0
#define KVMGPU_MEMCPY_DTOH_PIECES_QUEUEABLE 0
#define KVMGPU_MEMCPY_DTOH_PIECES_SYNCHRONISING 1
struct kvmgpu_args_memcpy_dtoh_pieces {
    uint64_t offset;
    uint64_t src;
    uint64_t nbytes;
    uint64_t stream;
    uint64_t piece;
    uint64_t landed;
};
_Static_assert(sizeof(struct kvmgpu_args_memcpy_dtoh_pieces) == 48, "MEMCPY_DTOH_PIECES args");

#define KVMGPU_CTX_GET_FLAGS_NARGS 0
#define KVMGPU_CTX_GET_FLAGS_BLOB_MAX 0
#define KVMGPU_CTX_GET_FLAGS_QUEUEABLE 0
#define KVMGPU_CTX_GET_FLAGS_SYNCHRONISING 0
struct __attribute__((packed)) kvmgpu_results_ctx_get_flags {
    uint32_t flags;
};
_Static_assert(sizeof(struct kvmgpu_results_ctx_get_flags) == 4, "CTX_GET_FLAGS results");

#define KVMGPU_DEVICE_GET_PCI_BUS_ID_NARGS 0
#define KVMGPU_DEVICE_GET_PCI_BUS_ID_BLOB_MAX 0
#define KVMGPU_DEVICE_GET_PCI_BUS_ID_QUEUEABLE 0
#define KVMGPU_DEVICE_GET_PCI_BUS_ID_SYNCHRONISING 0
struct __attribute__((packed)) kvmgpu_results_device_get_pci_bus_id {
    char bus_id[32];
};
_Static_assert(sizeof(struct kvmgpu_results_device_get_pci_bus_id) == 32, "DEVICE_GET_PCI_BUS_ID results");

#define KVMGPU_STREAM_GET_PRIORITY_NARGS 1
#define KVMGPU_STREAM_GET_PRIORITY_BLOB_MAX 0
#define KVMGPU_STREAM_GET_PRIORITY_QUEUEABLE 0
#define KVMGPU_STREAM_GET_PRIORITY_SYNCHRONISING 0
struct kvmgpu_args_stream_get_priority {
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_get_priority) == 8, "STREAM_GET_PRIORITY args");
struct __attribute__((packed)) kvmgpu_results_stream_get_priority {
    int32_t priority;
};
_Static_assert(sizeof(struct kvmgpu_results_stream_get_priority) == 4, "STREAM_GET_PRIORITY results");

#define KVMGPU_STREAM_WAIT_EVENT_NARGS 3
#define KVMGPU_STREAM_WAIT_EVENT_BLOB_MAX 0
#define KVMGPU_STREAM_WAIT_EVENT_QUEUEABLE 1
#define KVMGPU_STREAM_WAIT_EVENT_SYNCHRONISING 0
struct kvmgpu_args_stream_wait_event {
    uint64_t stream;
    uint64_t event;
    uint64_t flags;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_wait_event) == 24, "STREAM_WAIT_EVENT args");

#define KVMGPU_VGPU_PROCESSES_NARGS 0
#define KVMGPU_VGPU_PROCESSES_BLOB_MAX 0
#define KVMGPU_VGPU_PROCESSES_QUEUEABLE 0
#define KVMGPU_VGPU_PROCESSES_SYNCHRONISING 0
struct __attribute__((packed)) kvmgpu_results_vgpu_processes {
    uint32_t count;
};
_Static_assert(sizeof(struct kvmgpu_results_vgpu_processes) == 4, "VGPU_PROCESSES results");

#define KVMGPU_VGPU_UTILIZATION_NARGS 0
#define KVMGPU_VGPU_UTILIZATION_BLOB_MAX 0
#define KVMGPU_VGPU_UTILIZATION_QUEUEABLE 0
#define KVMGPU_VGPU_UTILIZATION_SYNCHRONISING 0
struct __attribute__((packed)) kvmgpu_results_vgpu_utilization {
    uint32_t gpu;
    uint32_t memory;
    uint32_t window_ms;
};
_Static_assert(sizeof(struct kvmgpu_results_vgpu_utilization) == 12, "VGPU_UTILIZATION results");

#define KVMGPU_STREAM_BEGIN_CAPTURE_NARGS 1
#define KVMGPU_STREAM_BEGIN_CAPTURE_BLOB_MAX 0
#define KVMGPU_STREAM_BEGIN_CAPTURE_QUEUEABLE 0
#define KVMGPU_STREAM_BEGIN_CAPTURE_SYNCHRONISING 0
struct kvmgpu_args_stream_begin_capture {
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_begin_capture) == 8, "STREAM_BEGIN_CAPTURE args");

#define KVMGPU_STREAM_END_CAPTURE_NARGS 1
#define KVMGPU_STREAM_END_CAPTURE_BLOB_MAX 0
#define KVMGPU_STREAM_END_CAPTURE_QUEUEABLE 0
#define KVMGPU_STREAM_END_CAPTURE_SYNCHRONISING 0
struct kvmgpu_args_stream_end_capture {
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_stream_end_capture) == 8, "STREAM_END_CAPTURE args");
struct __attribute__((packed)) kvmgpu_results_stream_end_capture {
    uint64_t graph;
};
_Static_assert(sizeof(struct kvmgpu_results_stream_end_capture) == 8, "STREAM_END_CAPTURE results");

#define KVMGPU_GRAPH_INSTANTIATE_NARGS 2
#define KVMGPU_GRAPH_INSTANTIATE_BLOB_MAX 0
#define KVMGPU_GRAPH_INSTANTIATE_QUEUEABLE 0
#define KVMGPU_GRAPH_INSTANTIATE_SYNCHRONISING 0
struct kvmgpu_args_graph_instantiate {
    uint64_t graph;
    uint64_t flags;
};
_Static_assert(sizeof(struct kvmgpu_args_graph_instantiate) == 16, "GRAPH_INSTANTIATE args");
struct __attribute__((packed)) kvmgpu_results_graph_instantiate {
    uint64_t graph_exec;
};
_Static_assert(sizeof(struct kvmgpu_results_graph_instantiate) == 8, "GRAPH_INSTANTIATE results");

#define KVMGPU_GRAPH_LAUNCH_NARGS 2
#define KVMGPU_GRAPH_LAUNCH_BLOB_MAX 0
#define KVMGPU_GRAPH_LAUNCH_QUEUEABLE 1
#define KVMGPU_GRAPH_LAUNCH_SYNCHRONISING 0
struct kvmgpu_args_graph_launch {
    uint64_t graph_exec;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_graph_launch) == 16, "GRAPH_LAUNCH args");

#define KVMGPU_GRAPH_UPLOAD_NARGS 2
#define KVMGPU_GRAPH_UPLOAD_BLOB_MAX 0
#define KVMGPU_GRAPH_UPLOAD_QUEUEABLE 1
#define KVMGPU_GRAPH_UPLOAD_SYNCHRONISING 0
struct kvmgpu_args_graph_upload {
    uint64_t graph_exec;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_graph_upload) == 16, "GRAPH_UPLOAD args");

#define KVMGPU_GRAPH_EXEC_DESTROY_NARGS 1
#define KVMGPU_GRAPH_EXEC_DESTROY_BLOB_MAX 0
#define KVMGPU_GRAPH_EXEC_DESTROY_QUEUEABLE 1
#define KVMGPU_GRAPH_EXEC_DESTROY_SYNCHRONISING 0
struct kvmgpu_args_graph_exec_destroy {
    uint64_t graph_exec;
};
_Static_assert(sizeof(struct kvmgpu_args_graph_exec_destroy) == 8, "GRAPH_EXEC_DESTROY args");

#define KVMGPU_GRAPH_DESTROY_NARGS 1
#define KVMGPU_GRAPH_DESTROY_BLOB_MAX 0
#define KVMGPU_GRAPH_DESTROY_QUEUEABLE 1
#define KVMGPU_GRAPH_DESTROY_SYNCHRONISING 0
struct kvmgpu_args_graph_destroy {
    uint64_t graph;
};
_Static_assert(sizeof(struct kvmgpu_args_graph_destroy) == 8, "GRAPH_DESTROY args");

#define KVMGPU_GRAPH_GET_NODE_COUNT_NARGS 1
#define KVMGPU_GRAPH_GET_NODE_COUNT_BLOB_MAX 0
#define KVMGPU_GRAPH_GET_NODE_COUNT_QUEUEABLE 0
#define KVMGPU_GRAPH_GET_NODE_COUNT_SYNCHRONISING 0
struct kvmgpu_args_graph_get_node_count {
    uint64_t graph;
};
_Static_assert(sizeof(struct kvmgpu_args_graph_get_node_count) == 8, "GRAPH_GET_NODE_COUNT args");
struct __attribute__((packed)) kvmgpu_results_graph_get_node_count {
    uint64_t count;
};
_Static_assert(sizeof(struct kvmgpu_results_graph_get_node_count) == 8, "GRAPH_GET_NODE_COUNT results");

#define KVMGPU_WINDOW_DEVICE_POINTER_NARGS 0
#define KVMGPU_WINDOW_DEVICE_POINTER_BLOB_MAX 0
#define KVMGPU_WINDOW_DEVICE_POINTER_QUEUEABLE 0
#define KVMGPU_WINDOW_DEVICE_POINTER_SYNCHRONISING 0
struct __attribute__((packed)) kvmgpu_results_window_device_pointer {
    uint64_t address;
};
_Static_assert(sizeof(struct kvmgpu_results_window_device_pointer) == 8, "WINDOW_DEVICE_POINTER results");

#define KVMGPU_FUNC_GET_ATTRIBUTES_NARGS 1
#define KVMGPU_FUNC_GET_ATTRIBUTES_BLOB_MAX 0
#define KVMGPU_FUNC_GET_ATTRIBUTES_QUEUEABLE 0
#define KVMGPU_FUNC_GET_ATTRIBUTES_SYNCHRONISING 0
struct kvmgpu_args_func_get_attributes {
    uint64_t function;
};
_Static_assert(sizeof(struct kvmgpu_args_func_get_attributes) == 8, "FUNC_GET_ATTRIBUTES args");
struct __attribute__((packed)) kvmgpu_results_func_get_attributes {
    char values[64];
};
_Static_assert(sizeof(struct kvmgpu_results_func_get_attributes) == 64, "FUNC_GET_ATTRIBUTES results");

#define KVMGPU_FUNC_SET_ATTRIBUTE_NARGS 3
#define KVMGPU_FUNC_SET_ATTRIBUTE_BLOB_MAX 0
#define KVMGPU_FUNC_SET_ATTRIBUTE_QUEUEABLE 0
#define KVMGPU_FUNC_SET_ATTRIBUTE_SYNCHRONISING 0
struct kvmgpu_args_func_set_attribute {
    uint64_t function;
    uint64_t attribute;
    uint64_t value;
};
_Static_assert(sizeof(struct kvmgpu_args_func_set_attribute) == 24, "FUNC_SET_ATTRIBUTE args");

#define KVMGPU_OCCUPANCY_MAX_BLOCKS_NARGS 4
#define KVMGPU_OCCUPANCY_MAX_BLOCKS_BLOB_MAX 0
#define KVMGPU_OCCUPANCY_MAX_BLOCKS_QUEUEABLE 0
#define KVMGPU_OCCUPANCY_MAX_BLOCKS_SYNCHRONISING 0
struct kvmgpu_args_occupancy_max_blocks {
    uint64_t function;
    uint64_t block;
    uint64_t shared;
    uint64_t flags;
};
_Static_assert(sizeof(struct kvmgpu_args_occupancy_max_blocks) == 32, "OCCUPANCY_MAX_BLOCKS args");
struct __attribute__((packed)) kvmgpu_results_occupancy_max_blocks {
    int32_t blocks;
};
_Static_assert(sizeof(struct kvmgpu_results_occupancy_max_blocks) == 4, "OCCUPANCY_MAX_BLOCKS results");

#define KVMGPU_OCCUPANCY_AVAILABLE_SMEM_NARGS 3
#define KVMGPU_OCCUPANCY_AVAILABLE_SMEM_BLOB_MAX 0
#define KVMGPU_OCCUPANCY_AVAILABLE_SMEM_QUEUEABLE 0
#define KVMGPU_OCCUPANCY_AVAILABLE_SMEM_SYNCHRONISING 0
struct kvmgpu_args_occupancy_available_smem {
    uint64_t function;
    uint64_t blocks;
    uint64_t block;
};
_Static_assert(sizeof(struct kvmgpu_args_occupancy_available_smem) == 24, "OCCUPANCY_AVAILABLE_SMEM args");
struct __attribute__((packed)) kvmgpu_results_occupancy_available_smem {
    uint64_t bytes;
};
_Static_assert(sizeof(struct kvmgpu_results_occupancy_available_smem) == 8, "OCCUPANCY_AVAILABLE_SMEM results");

#define KVMGPU_MEMSET_D16_NARGS 4
#define KVMGPU_MEMSET_D16_BLOB_MAX 0
#define KVMGPU_MEMSET_D16_QUEUEABLE 1
#define KVMGPU_MEMSET_D16_SYNCHRONISING 1
struct kvmgpu_args_memset_d16 {
    uint64_t dst;
    uint64_t value;
    uint64_t count;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_memset_d16) == 32, "MEMSET_D16 args");

#define KVMGPU_CTX_GET_LIMIT_NARGS 1
#define KVMGPU_CTX_GET_LIMIT_BLOB_MAX 0
#define KVMGPU_CTX_GET_LIMIT_QUEUEABLE 0
#define KVMGPU_CTX_GET_LIMIT_SYNCHRONISING 0
struct kvmgpu_args_ctx_get_limit {
    uint64_t limit;
};
_Static_assert(sizeof(struct kvmgpu_args_ctx_get_limit) == 8, "CTX_GET_LIMIT args");
struct __attribute__((packed)) kvmgpu_results_ctx_get_limit {
    uint64_t value;
};
_Static_assert(sizeof(struct kvmgpu_results_ctx_get_limit) == 8, "CTX_GET_LIMIT results");

#define KVMGPU_MEMCPY_2D_NARGS 7
#define KVMGPU_MEMCPY_2D_BLOB_MAX 0
#define KVMGPU_MEMCPY_2D_QUEUEABLE 1
#define KVMGPU_MEMCPY_2D_SYNCHRONISING 1
struct kvmgpu_args_memcpy_2d {
    uint64_t dst;
    uint64_t dpitch;
    uint64_t src;
    uint64_t spitch;
    uint64_t width;
    uint64_t height;
    uint64_t stream;
};
_Static_assert(sizeof(struct kvmgpu_args_memcpy_2d) == 56, "MEMCPY_2D args");

#define KVMGPU_TENSOR_MAP_ENCODE_TILED_NARGS 7
#define KVMGPU_TENSOR_MAP_ENCODE_TILED_BLOB_MAX 112
#define KVMGPU_TENSOR_MAP_ENCODE_TILED_QUEUEABLE 0
#define KVMGPU_TENSOR_MAP_ENCODE_TILED_SYNCHRONISING 0
struct kvmgpu_args_tensor_map_encode_tiled {
    uint64_t dtype;
    uint64_t rank;
    uint64_t address;
    uint64_t interleave;
    uint64_t swizzle;
    uint64_t l2;
    uint64_t fill;
};
_Static_assert(sizeof(struct kvmgpu_args_tensor_map_encode_tiled) == 56, "TENSOR_MAP_ENCODE_TILED args");
struct __attribute__((packed)) kvmgpu_results_tensor_map_encode_tiled {
    char map[128];
};
_Static_assert(sizeof(struct kvmgpu_results_tensor_map_encode_tiled) == 128, "TENSOR_MAP_ENCODE_TILED results");

#define KVMGPU_OCCUPANCY_MAX_CLUSTERS_NARGS 11
#define KVMGPU_OCCUPANCY_MAX_CLUSTERS_BLOB_MAX 0
#define KVMGPU_OCCUPANCY_MAX_CLUSTERS_QUEUEABLE 0
#define KVMGPU_OCCUPANCY_MAX_CLUSTERS_SYNCHRONISING 0
struct kvmgpu_args_occupancy_max_clusters {
    uint64_t function;
    uint64_t gx;
    uint64_t gy;
    uint64_t gz;
    uint64_t bx;
    uint64_t by;
    uint64_t bz;
    uint64_t shared;
    uint64_t cx;
    uint64_t cy;
    uint64_t cz;
};
_Static_assert(sizeof(struct kvmgpu_args_occupancy_max_clusters) == 88, "OCCUPANCY_MAX_CLUSTERS args");
struct __attribute__((packed)) kvmgpu_results_occupancy_max_clusters {
    int32_t clusters;
};
_Static_assert(sizeof(struct kvmgpu_results_occupancy_max_clusters) == 4, "OCCUPANCY_MAX_CLUSTERS results");

#define KVMGPU_TENSOR_MAP_ENCODE_IM2COL_NARGS 7
#define KVMGPU_TENSOR_MAP_ENCODE_IM2COL_BLOB_MAX 124
#define KVMGPU_TENSOR_MAP_ENCODE_IM2COL_QUEUEABLE 0
#define KVMGPU_TENSOR_MAP_ENCODE_IM2COL_SYNCHRONISING 0
struct kvmgpu_args_tensor_map_encode_im2col {
    uint64_t dtype;
    uint64_t rank;
    uint64_t address;
    uint64_t interleave;
    uint64_t swizzle;
    uint64_t l2;
    uint64_t fill;
};
_Static_assert(sizeof(struct kvmgpu_args_tensor_map_encode_im2col) == 56, "TENSOR_MAP_ENCODE_IM2COL args");
struct __attribute__((packed)) kvmgpu_results_tensor_map_encode_im2col {
    char map[128];
};
_Static_assert(sizeof(struct kvmgpu_results_tensor_map_encode_im2col) == 128, "TENSOR_MAP_ENCODE_IM2COL results");

/* One kernel parameter in MODULE_GET_FUNCTION's reply blob (an array of them). */
struct kvmgpu_param {
    uint32_t offset;
    uint32_t size;
};
_Static_assert(sizeof(struct kvmgpu_param) == 8, "param");

/* What the guest agent sends with the region's fd (SCM_RIGHTS) to a process that connects. */
struct kvmgpu_agent_region_info {
    uint64_t size;
};
_Static_assert(sizeof(struct kvmgpu_agent_region_info) == 8, "agent region info");

/* One guest process in VGPU_PROCESSES' reply blob (an array of them). */
struct kvmgpu_process {
    uint32_t pid;
    uint32_t sessions;
    uint64_t memory;
};
_Static_assert(sizeof(struct kvmgpu_process) == 16, "process");

/* The worker's packed launches: `count` launches of one function and shape whose parameter
 * bytes lie `stride` bytes apart (kvmgpu/backend/launcher.py packs, launcher.c reads). */
struct kvmgpu_launch_record {
    uint64_t function;
    uint64_t stream;
    uint64_t params;
    uint64_t size;
    uint64_t stride;
    uint32_t grid[3];
    uint32_t block[3];
    uint32_t shared;
    uint32_t count;
};
_Static_assert(sizeof(struct kvmgpu_launch_record) == 72, "launch record");

#endif

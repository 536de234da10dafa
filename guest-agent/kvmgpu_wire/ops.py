"""The op tables (generated from guest-agent/kvmgpu_wire/spec.py by tools/gen_wire.py (make gen): do not edit)."""

import enum

PROTOCOL_VERSION = 11
MAGIC = 0x474B
HEADER_FORMAT = "<HBBIII"
CALL_HEAD_FORMAT = "<HH"
LAUNCH_RECORD_FORMAT = "=QQQQQ3I3III"
QUEUED = 0x01
MAX_ARG_BYTES = 32764
MAX_NAME = 1024
HANDSHAKE_MAX = 16384
DEFAULT_MAX_FRAME = 65536
MAX_ERROR_TEXT = 512
WINDOW_ALIGN = 4096
MAILBOX_BYTES = 4096
MAILBOX_MIN_WINDOW = 65536
MAILBOX_POST = 0
MAILBOX_SIZE = 1
MAILBOX_ASLEEP = 2
MAILBOX_ANSWER = 16
MAILBOX_LENGTH = 17
MAILBOX_AWAKE = 18
MAILBOX_HEAD = 128
MAILBOX_REQUEST_MAX = 1984
PARAM_FORMAT = "<II"
AGENT_REGION_INFO_FORMAT = "<Q"
PROCESS_FORMAT = "<IIQ"
MAX_PROCESSES = 255


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    CALL = 3
    REPLY = 4
    GOODBYE = 5
    DOORBELL = 6


class Op(enum.IntEnum):
    CTX_SYNCHRONIZE = 1  # cuCtxSynchronize
    MEM_ALLOC = 2  # cuMemAlloc_v2
    MEM_FREE = 3  # cuMemFree_v2
    MEM_GET_INFO = 4  # cuMemGetInfo_v2
    MEMCPY_HTOD = 5  # cuMemcpyHtoD_v2, cuMemcpyHtoDAsync_v2
    MEMCPY_DTOH = 6  # cuMemcpyDtoH_v2, cuMemcpyDtoHAsync_v2
    MEMCPY_DTOD = 7  # cuMemcpyDtoD_v2, cuMemcpyDtoDAsync_v2
    MEMSET_D8 = 8  # cuMemsetD8_v2, cuMemsetD8Async
    MEMSET_D32 = 9  # cuMemsetD32_v2, cuMemsetD32Async
    MODULE_LOAD = 10  # cuModuleLoadData, cuModuleLoadDataEx, cuModuleLoadFatBinary
    MODULE_UNLOAD = 11  # cuModuleUnload
    MODULE_GET_FUNCTION = 12  # cuModuleGetFunction
    MODULE_GET_GLOBAL = 13  # cuModuleGetGlobal_v2
    LAUNCH = 14  # cuLaunchKernel
    STREAM_CREATE = 15  # cuStreamCreate
    STREAM_DESTROY = 16  # cuStreamDestroy_v2
    STREAM_SYNCHRONIZE = 17  # cuStreamSynchronize
    STREAM_QUERY = 18  # cuStreamQuery
    EVENT_CREATE = 19  # cuEventCreate
    EVENT_RECORD = 20  # cuEventRecord
    EVENT_SYNCHRONIZE = 21  # cuEventSynchronize
    EVENT_QUERY = 22  # cuEventQuery
    EVENT_ELAPSED = 23  # cuEventElapsedTime
    EVENT_DESTROY = 24  # cuEventDestroy_v2
    FENCE = 25  # (the guest's staging ring)
    MEMCPY_HTOD_STAGED = 26  # cuMemcpyHtoD_v2 (staged)
    MEMCPY_DTOH_PIECES = 27  # cuMemcpyDtoH_v2 (in pieces)
    CTX_GET_FLAGS = 28  # cuCtxGetFlags
    DEVICE_GET_PCI_BUS_ID = 29  # cuDeviceGetPCIBusId
    STREAM_GET_PRIORITY = 30  # cuStreamGetPriority
    STREAM_WAIT_EVENT = 31  # cuStreamWaitEvent
    VGPU_PROCESSES = 40  # nvmlDeviceGetComputeRunningProcesses
    VGPU_UTILIZATION = 41  # nvmlDeviceGetUtilizationRates
    STREAM_BEGIN_CAPTURE = 80  # cuStreamBeginCapture_v2
    STREAM_END_CAPTURE = 81  # cuStreamEndCapture
    GRAPH_INSTANTIATE = 82  # cuGraphInstantiateWithFlags, cuGraphInstantiateWithParams
    GRAPH_LAUNCH = 83  # cuGraphLaunch
    GRAPH_UPLOAD = 84  # cuGraphUpload
    GRAPH_EXEC_DESTROY = 85  # cuGraphExecDestroy
    GRAPH_DESTROY = 86  # cuGraphDestroy
    GRAPH_GET_NODE_COUNT = 87  # cuGraphGetNodes (the count: nodes NULL)
    WINDOW_DEVICE_POINTER = 88  # cuMemHostGetDevicePointer (the session's window)
    FUNC_GET_ATTRIBUTES = 50  # cuFuncGetAttribute, cuKernelGetAttribute
    FUNC_SET_ATTRIBUTE = 51  # cuFuncSetAttribute, cuKernelSetAttribute
    OCCUPANCY_MAX_BLOCKS = 52  # cuOccupancyMaxActiveBlocksPerMultiprocessor(WithFlags)
    OCCUPANCY_AVAILABLE_SMEM = 53  # cuOccupancyAvailableDynamicSMemPerBlock
    MEMSET_D16 = 54  # cuMemsetD16_v2, cuMemsetD16Async
    CTX_GET_LIMIT = 55  # cuCtxGetLimit
    MEMCPY_2D = 56  # cuMemcpy2D(Async)_v2, cuMemcpy3D(Async)_v2 (device to device)
    TENSOR_MAP_ENCODE_TILED = 57  # cuTensorMapEncodeTiled
    OCCUPANCY_MAX_CLUSTERS = 58  # cuOccupancyMaxActiveClusters
    TENSOR_MAP_ENCODE_IM2COL = 59  # cuTensorMapEncodeIm2col


# op: (argument names, result struct format, most blob bytes, queueable, synchronising)
TABLE = {
    Op.CTX_SYNCHRONIZE: ((), '', 0, False, True),
    Op.MEM_ALLOC: (('nbytes',), 'Q', 0, False, False),
    Op.MEM_FREE: (('dptr',), '', 0, True, False),
    Op.MEM_GET_INFO: ((), 'QQ', 0, False, False),
    Op.MEMCPY_HTOD: (('dst', 'offset', 'nbytes', 'stream'), '', 0, True, True),
    Op.MEMCPY_DTOH: (('offset', 'src', 'nbytes', 'stream'), '', 0, False, True),
    Op.MEMCPY_DTOD: (('dst', 'src', 'nbytes', 'stream'), '', 0, True, True),
    Op.MEMSET_D8: (('dst', 'value', 'count', 'stream'), '', 0, True, True),
    Op.MEMSET_D32: (('dst', 'value', 'count', 'stream'), '', 0, True, True),
    Op.MODULE_LOAD: (('offset', 'nbytes'), 'Q', 32, False, False),
    Op.MODULE_UNLOAD: (('module',), '', 0, True, False),
    Op.MODULE_GET_FUNCTION: (('module',), 'QQ', 1024, False, False),
    Op.MODULE_GET_GLOBAL: (('module',), 'QQ', 1024, False, False),
    Op.LAUNCH: (('function', 'gx', 'gy', 'gz', 'bx', 'by', 'bz', 'shared', 'stream'), '', 32764, True, False),
    Op.STREAM_CREATE: (('flags',), 'Q', 0, False, False),
    Op.STREAM_DESTROY: (('stream',), '', 0, True, False),
    Op.STREAM_SYNCHRONIZE: (('stream',), '', 0, False, True),
    Op.STREAM_QUERY: (('stream',), '', 0, False, True),
    Op.EVENT_CREATE: (('flags',), 'Q', 0, False, False),
    Op.EVENT_RECORD: (('event', 'stream'), '', 0, True, False),
    Op.EVENT_SYNCHRONIZE: (('event',), '', 0, False, True),
    Op.EVENT_QUERY: (('event',), '', 0, False, True),
    Op.EVENT_ELAPSED: (('start', 'end'), 'f', 0, False, False),
    Op.EVENT_DESTROY: (('event',), '', 0, True, False),
    Op.FENCE: ((), '', 0, False, True),
    Op.MEMCPY_HTOD_STAGED: (('dst', 'offset', 'nbytes', 'done'), '', 0, True, False),
    Op.MEMCPY_DTOH_PIECES: (('offset', 'src', 'nbytes', 'stream', 'piece', 'landed'), '', 0, False, True),
    Op.CTX_GET_FLAGS: ((), 'I', 0, False, False),
    Op.DEVICE_GET_PCI_BUS_ID: ((), '32s', 0, False, False),
    Op.STREAM_GET_PRIORITY: (('stream',), 'i', 0, False, False),
    Op.STREAM_WAIT_EVENT: (('stream', 'event', 'flags'), '', 0, True, False),
    Op.VGPU_PROCESSES: ((), 'I', 0, False, False),
    Op.VGPU_UTILIZATION: ((), 'III', 0, False, False),
    Op.STREAM_BEGIN_CAPTURE: (('stream',), '', 0, False, False),
    Op.STREAM_END_CAPTURE: (('stream',), 'Q', 0, False, False),
    Op.GRAPH_INSTANTIATE: (('graph', 'flags'), 'Q', 0, False, False),
    Op.GRAPH_LAUNCH: (('graph_exec', 'stream'), '', 0, True, False),
    Op.GRAPH_UPLOAD: (('graph_exec', 'stream'), '', 0, True, False),
    Op.GRAPH_EXEC_DESTROY: (('graph_exec',), '', 0, True, False),
    Op.GRAPH_DESTROY: (('graph',), '', 0, True, False),
    Op.GRAPH_GET_NODE_COUNT: (('graph',), 'Q', 0, False, False),
    Op.WINDOW_DEVICE_POINTER: ((), 'Q', 0, False, False),
    Op.FUNC_GET_ATTRIBUTES: (('function',), '64s', 0, False, False),
    Op.FUNC_SET_ATTRIBUTE: (('function', 'attribute', 'value'), '', 0, False, False),
    Op.OCCUPANCY_MAX_BLOCKS: (('function', 'block', 'shared', 'flags'), 'i', 0, False, False),
    Op.OCCUPANCY_AVAILABLE_SMEM: (('function', 'blocks', 'block'), 'Q', 0, False, False),
    Op.MEMSET_D16: (('dst', 'value', 'count', 'stream'), '', 0, True, True),
    Op.CTX_GET_LIMIT: (('limit',), 'Q', 0, False, False),
    Op.MEMCPY_2D: (('dst', 'dpitch', 'src', 'spitch', 'width', 'height', 'stream'), '', 0, True, True),
    Op.TENSOR_MAP_ENCODE_TILED: (('dtype', 'rank', 'address', 'interleave', 'swizzle', 'l2', 'fill'), '128s', 112, False, False),
    Op.OCCUPANCY_MAX_CLUSTERS: (('function', 'gx', 'gy', 'gz', 'bx', 'by', 'bz', 'shared', 'cx', 'cy', 'cz'), 'i', 0, False, False),
    Op.TENSOR_MAP_ENCODE_IM2COL: (('dtype', 'rank', 'address', 'interleave', 'swizzle', 'l2', 'fill'), '128s', 124, False, False),
}

# the ops that wait for the GPU: always, or only when not queued (the compute gate meters them)
WAITS_GPU = {
    Op.CTX_SYNCHRONIZE: 'always',
    Op.MEMCPY_HTOD: 'if_sync',
    Op.MEMCPY_DTOH: 'always',
    Op.MEMCPY_DTOD: 'if_sync',
    Op.MEMSET_D8: 'if_sync',
    Op.MEMSET_D32: 'if_sync',
    Op.STREAM_SYNCHRONIZE: 'always',
    Op.EVENT_SYNCHRONIZE: 'always',
    Op.FENCE: 'always',
    Op.MEMCPY_HTOD_STAGED: 'always',
    Op.MEMCPY_DTOH_PIECES: 'always',
    Op.MEMSET_D16: 'if_sync',
    Op.MEMCPY_2D: 'if_sync',
}

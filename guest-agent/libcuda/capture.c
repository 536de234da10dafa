/* Stream capture and CUDA graphs. The capture happens on the host: the worker's stream really
 * captures (kvmgpu/worker/graphs.py), and what the program launches, sets or copies on the
 * stream meanwhile is forwarded as ever. The graph and its executable are the host's, known here
 * by their handles.
 *
 * The capture queries (cuStreamIsCapturing, cuStreamGetCaptureInfo: PyTorch's caching allocator
 * asks on every allocation) are answered here, from the captures this process began: a stream
 * this library did not put into capture is not capturing. The host captures in relaxed mode (its
 * one thread serves every process of the VM); the modes of this process's threads are kept here,
 * as CUDA defines them: cuThreadExchangeStreamCaptureMode sets the calling thread's, and a
 * potentially unsafe call (an allocation, a free, a synchronise or query) that the thread may not
 * make now is CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, the captures that forbid it invalidated, as
 * the driver does. A synchronous copy or memset runs on the legacy stream: it is refused only where
 * it would wait for a capturing stream (a blocking one: CUDA_ERROR_STREAM_CAPTURE_IMPLICIT).
 * cuCtxSynchronize during any capture is CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED too, and so is
 * synchronising or querying a capturing stream. */
#define _GNU_SOURCE
#include "api.h"

#include <pthread.h>
#include <stdatomic.h>

#define S (&kvmgpu_session)
#define MAX_CAPTURES 64

#define MODE_GLOBAL 0
#define MODE_THREAD_LOCAL 1
#define MODE_RELAXED 2
#define STATUS_NONE 0
#define STATUS_ACTIVE 1
#define STATUS_INVALIDATED 2
#define INSTANTIATE_UPLOAD 2ull /* CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD */
#define INSTANTIATE_SUCCESS 0   /* CUDA_GRAPH_INSTANTIATE_SUCCESS */
#define INSTANTIATE_ERROR 1     /* CUDA_GRAPH_INSTANTIATE_ERROR */

typedef int CUstreamCaptureMode;
typedef int CUstreamCaptureStatus;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;
typedef struct CUgraphNode_st *CUgraphNode;
typedef struct CUgraphEdgeData_st CUgraphEdgeData;
typedef struct { /* CUDA_GRAPH_INSTANTIATE_PARAMS */
    cuuint64_t flags;
    CUstream hUploadStream;
    CUgraphNode hErrNode_out;
    int result_out;
} CUDA_GRAPH_INSTANTIATE_PARAMS;

#define TAKEN UINT64_MAX /* a slot's stream while its capture is being begun on the host */

struct capture {
    uint64_t stream; /* the host's stream handle; 0: a free slot */
    uint64_t origin; /* a stream that joined a capture (cuStreamWaitEvent): the stream that began it */
    uint64_t id;     /* unique in the process, as the driver's (a joined stream: its origin's) */
    int mode;        /* what cuStreamBeginCapture was given */
    int invalidated;
    int blocking;     /* the stream waits for the legacy stream's work, and it for the stream's */
    pthread_t thread; /* that began it */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct capture captures[MAX_CAPTURES];
static atomic_int active;      /* captures in progress: while 0 every check below is one load */
static uint64_t next_id = 1;   /* (under lock) */
static _Thread_local int thread_mode = MODE_GLOBAL; /* the calling thread's, CUDA's default */

static struct capture *find(uint64_t stream) /* under lock */
{
    for (int i = 0; i < MAX_CAPTURES; i++)
        if (captures[i].stream == stream)
            return &captures[i];
    return NULL;
}

/* The events recorded into a capture going on, and its origin stream (cuStreamWaitEvent on one
 * forks the capture onto the waiting stream). Under lock; an event recorded again elsewhere, or
 * whose capture ended, leaves. */
#define MAX_CAPTURED_EVENTS 256
static struct {
    uint64_t event, origin;
} captured_events[MAX_CAPTURED_EVENTS];

/* A capture is invalidated in its origin's slot (a joined stream's slot says it too). */
static void invalidate(struct capture *c) /* under lock */
{
    c->invalidated = 1;
    struct capture *o = c->origin ? find(c->origin) : NULL;
    if (o)
        o->invalidated = 1;
}

static int invalidated(const struct capture *c) /* under lock */
{
    const struct capture *o = c->origin ? find(c->origin) : NULL;
    return c->invalidated || (o && o->invalidated);
}

/* The capture begun on `origin` ends (or its stream goes): its slot, the slots of the streams that
 * joined it and its events are free. */
static void end_slots(uint64_t origin) /* under lock */
{
    for (int i = 0; i < MAX_CAPTURES; i++)
        if (captures[i].stream && captures[i].stream != TAKEN
            && (captures[i].stream == origin || captures[i].origin == origin)) {
            captures[i].stream = captures[i].origin = 0;
            atomic_fetch_sub_explicit(&active, 1, memory_order_release);
        }
    for (int i = 0; i < MAX_CAPTURED_EVENTS; i++)
        if (captured_events[i].origin == origin)
            captured_events[i].event = captured_events[i].origin = 0;
}

/* cuEventRecord of `event` on `stream` (after the host took it): whether it went into a capture. */
void kvmgpu_capture_record(CUevent event, CUstream stream)
{
    uint64_t e = (uint64_t)(uintptr_t)event, s = kvmgpu_stream(stream);
    if (!atomic_load_explicit(&active, memory_order_acquire))
        return;
    pthread_mutex_lock(&lock);
    const struct capture *c = s ? find(s) : NULL;
    int at = -1;
    for (int i = 0; i < MAX_CAPTURED_EVENTS && at < 0; i++)
        if (captured_events[i].event == e)
            at = i;
    if (c && at < 0)
        for (int i = 0; i < MAX_CAPTURED_EVENTS && at < 0; i++)
            if (!captured_events[i].event)
                at = i;
    if (at >= 0) {
        captured_events[at].event = c ? e : 0;
        captured_events[at].origin = c ? (c->origin ? c->origin : c->stream) : 0;
    }
    pthread_mutex_unlock(&lock);
}

/* cuStreamWaitEvent of `stream` on `event` (after the host took it): a stream not capturing that
 * waits for an event recorded into a capture joins it, as the host's stream did. */
void kvmgpu_capture_join(CUstream stream, CUevent event)
{
    uint64_t e = (uint64_t)(uintptr_t)event, s = kvmgpu_stream(stream);
    if (!s || !atomic_load_explicit(&active, memory_order_acquire))
        return;
    pthread_mutex_lock(&lock);
    uint64_t origin = 0;
    for (int i = 0; i < MAX_CAPTURED_EVENTS && !origin; i++)
        if (captured_events[i].event == e)
            origin = captured_events[i].origin;
    const struct capture *o = origin ? find(origin) : NULL;
    struct capture *slot = o && !find(s) ? find(0) : NULL;
    if (slot) {
        *slot = *o;
        slot->stream = s;
        slot->origin = origin;
        slot->blocking = kvmgpu_stream_blocking(s);
        atomic_fetch_add_explicit(&active, 1, memory_order_release);
    } else if (o && !find(s)) {
        kvmgpu_log("cuStreamWaitEvent: more than %d streams capture at once: this one's capture "
                   "is not followed here", MAX_CAPTURES);
    }
    pthread_mutex_unlock(&lock);
}

/* Whether the calling thread may make a potentially unsafe call now (cuThreadExchangeStreamCaptureMode's
 * rules): not where it began a capture that is not relaxed, nor, in global mode, where another
 * thread began one in global mode. The captures that forbid it are invalidated. */
CUresult kvmgpu_capture_unsafe(void)
{
    if (!atomic_load_explicit(&active, memory_order_acquire) || thread_mode == MODE_RELAXED)
        return KVMGPU_CUDA_SUCCESS;
    pthread_t me = pthread_self();
    int forbidden = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_CAPTURES; i++) {
        struct capture *c = &captures[i];
        if (!c->stream || c->stream == TAKEN)
            continue;
        int mine = pthread_equal(c->thread, me);
        if ((mine && c->mode != MODE_RELAXED) || (!mine && thread_mode == MODE_GLOBAL && c->mode == MODE_GLOBAL)) {
            invalidate(c);
            forbidden = 1;
        }
    }
    pthread_mutex_unlock(&lock);
    return forbidden ? KVMGPU_CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : KVMGPU_CUDA_SUCCESS;
}

/* A synchronous copy or memset on the legacy stream: it waits for every blocking stream, so not
 * while a blocking stream captures (CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, that capture invalidated);
 * a non-blocking stream's capture does not forbid it, in any mode (as the H100's driver answers). */
CUresult kvmgpu_capture_legacy(void)
{
    if (!atomic_load_explicit(&active, memory_order_acquire))
        return KVMGPU_CUDA_SUCCESS;
    int implicit = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_CAPTURES; i++)
        if (captures[i].stream && captures[i].stream != TAKEN && captures[i].blocking) {
            invalidate(&captures[i]);
            implicit = 1;
        }
    pthread_mutex_unlock(&lock);
    return implicit ? KVMGPU_CUDA_ERROR_STREAM_CAPTURE_IMPLICIT : KVMGPU_CUDA_SUCCESS;
}

/* cuCtxSynchronize: not while any stream captures (every capture is invalidated). */
CUresult kvmgpu_capture_context_sync(void)
{
    if (!atomic_load_explicit(&active, memory_order_acquire))
        return KVMGPU_CUDA_SUCCESS;
    int any = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_CAPTURES; i++)
        if (captures[i].stream && captures[i].stream != TAKEN) {
            invalidate(&captures[i]);
            any = 1;
        }
    pthread_mutex_unlock(&lock);
    return any ? KVMGPU_CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : KVMGPU_CUDA_SUCCESS;
}

/* A synchronise or query of `stream` (or an unsafe call on another): not of a capturing stream
 * (its capture is invalidated), else as kvmgpu_capture_unsafe says. */
CUresult kvmgpu_capture_wait(CUstream stream)
{
    if (!atomic_load_explicit(&active, memory_order_acquire))
        return KVMGPU_CUDA_SUCCESS;
    uint64_t s = kvmgpu_stream(stream);
    int capturing = 0;
    pthread_mutex_lock(&lock);
    struct capture *c = s ? find(s) : NULL;
    if (c) {
        invalidate(c);
        capturing = 1;
    }
    pthread_mutex_unlock(&lock);
    return capturing ? KVMGPU_CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : kvmgpu_capture_unsafe();
}

/* A stream being destroyed: its capture, if any, ends with it (the host drops the graph); one that
 * joined a capture leaves it. */
void kvmgpu_capture_forget(CUstream stream)
{
    uint64_t s = kvmgpu_stream(stream);
    if (!s || !atomic_load_explicit(&active, memory_order_acquire))
        return;
    pthread_mutex_lock(&lock);
    struct capture *c = find(s);
    if (c && c->origin) {
        c->stream = c->origin = 0;
        atomic_fetch_sub_explicit(&active, 1, memory_order_release);
    } else if (c) {
        end_slots(s);
    }
    pthread_mutex_unlock(&lock);
}

/* --- capture ----------------------------------------------------------------------------------- */

CUAPI CUresult cuStreamBeginCapture_v2(CUstream stream, CUstreamCaptureMode mode)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (mode < MODE_GLOBAL || mode > MODE_RELAXED)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    uint64_t s = kvmgpu_stream(stream);
    if (!s) /* the null stream (legacy or per-thread: the VM has one) cannot be captured */
        return KVMGPU_CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    pthread_mutex_lock(&lock);
    int already = find(s) != NULL;
    struct capture *slot = already ? NULL : find(0);
    if (slot)
        slot->stream = TAKEN;
    pthread_mutex_unlock(&lock);
    if (!slot) /* (a capture already under way on it; or MAX_CAPTURES at once) */
        return already ? KVMGPU_CUDA_ERROR_ILLEGAL_STATE : KVMGPU_CUDA_ERROR_OUT_OF_MEMORY;
    rc = kvmgpu_stream_begin_capture(S, s);
    pthread_mutex_lock(&lock);
    if (rc) {
        slot->stream = 0;
    } else {
        slot->stream = s;
        slot->id = next_id++;
        slot->mode = mode;
        slot->invalidated = 0;
        slot->blocking = kvmgpu_stream_blocking(s);
        slot->thread = pthread_self();
        atomic_fetch_add_explicit(&active, 1, memory_order_release);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

CUAPI CUresult cuStreamBeginCapture_v2_ptsz(CUstream stream, CUstreamCaptureMode mode)
{
    return cuStreamBeginCapture_v2(stream, mode);
}

CUAPI CUresult cuStreamBeginCapture(CUstream stream) /* CUDA 10.0's: global mode */
{
    return cuStreamBeginCapture_v2(stream, MODE_GLOBAL);
}

CUAPI CUresult cuStreamBeginCapture_ptsz(CUstream stream)
{
    return cuStreamBeginCapture_v2(stream, MODE_GLOBAL);
}

CUAPI CUresult cuStreamEndCapture(CUstream stream, CUgraph *graph)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!graph)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    *graph = NULL;
    uint64_t s = kvmgpu_stream(stream);
    int invalidated = 0;
    pthread_mutex_lock(&lock);
    struct capture *c = s ? find(s) : NULL;
    int joined = c && c->origin;
    if (!c)
        rc = KVMGPU_CUDA_ERROR_ILLEGAL_STATE;
    else if (c->mode != MODE_RELAXED && !pthread_equal(c->thread, pthread_self()))
        rc = KVMGPU_CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;
    else if (joined)
        invalidate(c); /* only the origin ends a capture: the host says so, and it is invalidated */
    else {
        invalidated = c->invalidated;
        end_slots(s); /* the capture ends, whatever the host says */
    }
    pthread_mutex_unlock(&lock);
    if (rc)
        return rc;
    struct kvmgpu_results_stream_end_capture out;
    rc = kvmgpu_stream_end_capture(S, s, &out);
    if (joined) {
        if (rc == 0)
            kvmgpu_graph_destroy(S, out.graph, 1);
        return rc ? rc : KVMGPU_CUDA_ERROR_STREAM_CAPTURE_UNMATCHED;
    }
    if (rc == 0 && invalidated) { /* invalidated here: the host's graph is of no use */
        kvmgpu_graph_destroy(S, out.graph, 1);
        return KVMGPU_CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    if (rc == 0)
        *graph = (CUgraph)(uintptr_t)out.graph;
    return rc;
}

CUAPI CUresult cuStreamEndCapture_ptsz(CUstream stream, CUgraph *graph)
{
    return cuStreamEndCapture(stream, graph);
}

/* The capture status of `stream` and, when it captures, its id: from this process's captures. */
static CUresult status_of(CUstream stream, CUstreamCaptureStatus *status, cuuint64_t *id)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!status)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    *status = STATUS_NONE;
    uint64_t s = kvmgpu_stream(stream);
    if (!s || !atomic_load_explicit(&active, memory_order_acquire))
        return KVMGPU_CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    const struct capture *c = find(s);
    if (c) {
        *status = invalidated(c) ? STATUS_INVALIDATED : STATUS_ACTIVE;
        if (id)
            *id = c->id;
    }
    pthread_mutex_unlock(&lock);
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuStreamIsCapturing(CUstream stream, CUstreamCaptureStatus *status)
{
    return status_of(stream, status, NULL);
}

CUAPI CUresult cuStreamIsCapturing_ptsz(CUstream stream, CUstreamCaptureStatus *status)
{
    return status_of(stream, status, NULL);
}

CUAPI CUresult cuStreamGetCaptureInfo(CUstream stream, CUstreamCaptureStatus *status, cuuint64_t *id)
{
    return status_of(stream, status, id);
}

CUAPI CUresult cuStreamGetCaptureInfo_ptsz(CUstream stream, CUstreamCaptureStatus *status, cuuint64_t *id)
{
    return status_of(stream, status, id);
}

/* The graph being captured is the host's: it is named by a value no handle takes (the capture's id
 * with the top bit set), which any graph call refuses; no nodes are known here (no dependencies). */
CUAPI CUresult cuStreamGetCaptureInfo_v3(CUstream stream, CUstreamCaptureStatus *status, cuuint64_t *id,
                                         CUgraph *graph, const CUgraphNode **deps, const CUgraphEdgeData **edges,
                                         size_t *ndeps)
{
    cuuint64_t capture = 0;
    CUresult rc = status_of(stream, status, &capture);
    if (rc)
        return rc;
    if (id && *status != STATUS_NONE)
        *id = capture;
    if (graph)
        *graph = *status != STATUS_NONE ? (CUgraph)(uintptr_t)(capture | 1ull << 63) : NULL;
    if (deps)
        *deps = NULL;
    if (edges)
        *edges = NULL;
    if (ndeps)
        *ndeps = 0;
    return KVMGPU_CUDA_SUCCESS;
}

CUAPI CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream stream, CUstreamCaptureStatus *status, cuuint64_t *id,
                                              CUgraph *graph, const CUgraphNode **deps,
                                              const CUgraphEdgeData **edges, size_t *ndeps)
{
    return cuStreamGetCaptureInfo_v3(stream, status, id, graph, deps, edges, ndeps);
}

CUAPI CUresult cuStreamGetCaptureInfo_v2(CUstream stream, CUstreamCaptureStatus *status, cuuint64_t *id,
                                         CUgraph *graph, const CUgraphNode **deps, size_t *ndeps)
{
    return cuStreamGetCaptureInfo_v3(stream, status, id, graph, deps, NULL, ndeps);
}

CUAPI CUresult cuStreamGetCaptureInfo_v2_ptsz(CUstream stream, CUstreamCaptureStatus *status, cuuint64_t *id,
                                              CUgraph *graph, const CUgraphNode **deps, size_t *ndeps)
{
    return cuStreamGetCaptureInfo_v3(stream, status, id, graph, deps, NULL, ndeps);
}

CUAPI CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode)
{
    if (!mode || *mode < MODE_GLOBAL || *mode > MODE_RELAXED)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    int old = thread_mode;
    thread_mode = *mode;
    *mode = old;
    return KVMGPU_CUDA_SUCCESS;
}

/* --- graphs: the host's, by handle ------------------------------------------------------------- */

CUAPI CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph graph, unsigned long long flags)
{
    CUresult rc = kvmgpu_ready();
    if (rc)
        return rc;
    if (!exec)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    struct kvmgpu_results_graph_instantiate out;
    rc = kvmgpu_graph_instantiate(S, (uint64_t)(uintptr_t)graph, flags, &out);
    if (rc == 0)
        *exec = (CUgraphExec)(uintptr_t)out.graph_exec;
    return rc;
}

/* CUDA 10 and 11's form: no error node or log to give (the host's reason is logged). */
CUAPI CUresult cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node, char *log,
                                     size_t log_size)
{
    if (error_node)
        *error_node = NULL;
    if (log && log_size)
        log[0] = '\0';
    return cuGraphInstantiateWithFlags(exec, graph, 0);
}

CUAPI CUresult cuGraphInstantiate(CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node, char *log,
                                  size_t log_size)
{
    return cuGraphInstantiate_v2(exec, graph, error_node, log, log_size);
}

CUAPI CUresult cuGraphUpload(CUgraphExec exec, CUstream stream);

CUAPI CUresult cuGraphInstantiateWithParams(CUgraphExec *exec, CUgraph graph, CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    if (!params)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    CUresult rc = cuGraphInstantiateWithFlags(exec, graph, params->flags & ~INSTANTIATE_UPLOAD);
    if (rc == 0 && (params->flags & INSTANTIATE_UPLOAD))
        rc = cuGraphUpload(*exec, params->hUploadStream);
    params->hErrNode_out = NULL;
    params->result_out = rc ? INSTANTIATE_ERROR : INSTANTIATE_SUCCESS;
    return rc;
}

CUAPI CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph graph,
                                                 CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    return cuGraphInstantiateWithParams(exec, graph, params);
}

/* Queued, as a kernel launch: its error comes with the next synchronising call. */
CUAPI CUresult cuGraphLaunch(CUgraphExec exec, CUstream stream)
{
    CUresult rc = kvmgpu_ready();
    return rc ? rc : kvmgpu_graph_launch(S, (uint64_t)(uintptr_t)exec, kvmgpu_stream(stream), 1);
}

CUAPI CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream stream)
{
    return cuGraphLaunch(exec, stream);
}

CUAPI CUresult cuGraphUpload(CUgraphExec exec, CUstream stream)
{
    CUresult rc = kvmgpu_ready();
    return rc ? rc : kvmgpu_graph_upload(S, (uint64_t)(uintptr_t)exec, kvmgpu_stream(stream), 1);
}

CUAPI CUresult cuGraphUpload_ptsz(CUgraphExec exec, CUstream stream)
{
    return cuGraphUpload(exec, stream);
}

CUAPI CUresult cuGraphExecDestroy(CUgraphExec exec)
{
    CUresult rc = kvmgpu_initialised();
    return rc ? rc : kvmgpu_graph_exec_destroy(S, (uint64_t)(uintptr_t)exec, 0);
}

/* The count only (PyTorch asks it after every capture, nodes NULL): a VM is given no node handles. */
CUAPI CUresult cuGraphGetNodes(CUgraph graph, CUgraphNode *nodes, size_t *numNodes)
{
    CUresult rc = kvmgpu_initialised();
    if (rc)
        return rc;
    if (!numNodes)
        return KVMGPU_CUDA_ERROR_INVALID_VALUE;
    if (nodes) {
        static int said;
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
            kvmgpu_log("cuGraphGetNodes: a graph's nodes are not given to a VM, only their count (CUDA_ERROR_NOT_SUPPORTED)");
        return KVMGPU_CUDA_ERROR_NOT_SUPPORTED;
    }
    struct kvmgpu_results_graph_get_node_count out;
    rc = kvmgpu_graph_get_node_count(S, (uint64_t)(uintptr_t)graph, &out);
    if (rc == 0)
        *numNodes = (size_t)out.count;
    return rc;
}

CUAPI CUresult cuGraphDestroy(CUgraph graph)
{
    CUresult rc = kvmgpu_initialised();
    return rc ? rc : kvmgpu_graph_destroy(S, (uint64_t)(uintptr_t)graph, 0);
}

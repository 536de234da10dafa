/* Stream capture and graphs through the driver API (CUDA's own cuda.h, -lcuda), on kvmgpu's
 * libcuda.so.1: what the runtime program (graphs_runtime.cu) does not reach. Run by
 * tests/guest/test_cudart_graphs.py:
 *
 *   graphs_driver KERNELS.ptx
 *
 * the variants cuGetProcAddress gives by version, cuGraphInstantiateWithParams with an upload,
 * the capture's own errors (a stream already capturing, one that is not, the null stream, the
 * wrong thread, a copy from the host, a synchronise of the capturing stream), the graph that
 * cuStreamGetCaptureInfo names, and a capture forked onto a second stream and joined back
 * (cuStreamWaitEvent); `graphs_driver KERNELS.ptx fork`: that last part only, whose answers are the
 * same natively. OK/FAIL lines, then DONE. */
#define _GNU_SOURCE
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *name(CUresult rc)
{
    const char *s = NULL;
    return cuGetErrorName(rc, &s) == CUDA_SUCCESS ? s : "(unknown)";
}

#define CHECK(call)                                                              \
    do {                                                                         \
        CUresult rc_ = (call);                                                   \
        if (rc_ != CUDA_SUCCESS) {                                               \
            printf("FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #call, name(rc_)); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)
#define EXPECT(what, call, want)                                                 \
    do {                                                                         \
        CUresult rc_ = (call);                                                   \
        printf("%s %s: %s\n", rc_ == (want) ? "OK" : "FAIL", what, name(rc_));   \
    } while (0)
#define TRUE(what, cond) printf("%s %s\n", (cond) ? "OK" : "FAIL", what)

enum { N = 256 };
static CUfunction vector_add;
static CUdeviceptr a, b, c;
static CUstream stream;
static CUcontext ctx;

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        exit(2);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *p = calloc(1, (size_t)n + 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n)
        exit(2);
    fclose(f);
    return p;
}

static void launch_on(CUstream on, CUdeviceptr *x, CUdeviceptr *y, CUdeviceptr *out)
{
    int n = N;
    void *args[] = {x, y, out, &n};
    CHECK(cuLaunchKernel(vector_add, 1, 1, 1, N, 1, 1, 0, on, args, NULL));
}

static void launch(void)
{
    launch_on(stream, &a, &b, &c);
}

/* How many of out[i] are not want * i. */
static int wrong_in(CUdeviceptr out, float want)
{
    float host[N];
    CHECK(cuMemcpyDtoH(host, out, sizeof host));
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += host[i] != want * i;
    return wrong;
}

/* A capture forked onto a second stream and joined back (an event recorded on one, waited for by
 * the other), as multi-stream programs capture: c = a + b, then on the side stream d = c + b. */
static void fork_and_join(void)
{
    CUstream side;
    CUevent fork, join;
    CUdeviceptr d;
    CUgraph graph = NULL;
    CUgraphExec exec = NULL;
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    cuuint64_t id = 0, side_id = 0;
    CHECK(cuMemAlloc(&d, N * sizeof(float)));
    CHECK(cuStreamCreate(&side, CU_STREAM_NON_BLOCKING));
    CHECK(cuEventCreate(&fork, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventCreate(&join, CU_EVENT_DISABLE_TIMING));
    CHECK(cuMemsetD8(c, 0, N * sizeof(float)));
    CHECK(cuMemsetD8(d, 0, N * sizeof(float)));

    CHECK(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
    launch();
    CHECK(cuEventRecord(fork, stream));
    CHECK(cuStreamIsCapturing(side, &status));
    TRUE("fork: the side stream is not capturing before it waits", status == CU_STREAM_CAPTURE_STATUS_NONE);
    CHECK(cuStreamWaitEvent(side, fork, 0));
    CHECK(cuStreamGetCaptureInfo(stream, &status, &id, NULL, NULL, NULL, NULL));
    CHECK(cuStreamGetCaptureInfo(side, &status, &side_id, NULL, NULL, NULL, NULL));
    TRUE("fork: the side stream joined the capture",
         status == CU_STREAM_CAPTURE_STATUS_ACTIVE && side_id == id && id != 0);
    launch_on(side, &c, &b, &d);
    CHECK(cuEventRecord(join, side));
    CHECK(cuStreamWaitEvent(stream, join, 0));
    CHECK(cuStreamEndCapture(stream, &graph));
    CHECK(cuStreamIsCapturing(side, &status));
    TRUE("fork: the capture's end ends the side stream's", status == CU_STREAM_CAPTURE_STATUS_NONE);
    size_t nodes = 0;
    CHECK(cuGraphGetNodes(graph, NULL, &nodes));
    TRUE("fork: the graph has the two launches", nodes == 2);
    TRUE("fork: nothing ran while captured", wrong_in(d, 0.0f) == 0);
    CHECK(cuGraphInstantiateWithFlags(&exec, graph, 0));
    CHECK(cuGraphLaunch(exec, stream));
    CHECK(cuStreamSynchronize(stream));
    int wrong = wrong_in(c, 2.0f) + wrong_in(d, 3.0f);
    printf("%s fork: the graph launched both streams' work (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphDestroy(graph));

    /* a fork never joined; a capture ended on the stream that joined it */
    CHECK(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuEventRecord(fork, stream));
    CHECK(cuStreamWaitEvent(side, fork, 0));
    launch_on(side, &c, &b, &d);
    EXPECT("fork: a fork not joined back", cuStreamEndCapture(stream, &graph), CUDA_ERROR_STREAM_CAPTURE_UNJOINED);
    CHECK(cuStreamIsCapturing(side, &status));
    TRUE("fork: ... ends the side stream's capture too", status == CU_STREAM_CAPTURE_STATUS_NONE);
    CHECK(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuEventRecord(fork, stream));
    CHECK(cuStreamWaitEvent(side, fork, 0));
    EXPECT("fork: the capture ended on the stream that joined it", cuStreamEndCapture(side, &graph),
           CUDA_ERROR_STREAM_CAPTURE_UNMATCHED);
    EXPECT("fork: ... invalidates it", cuStreamEndCapture(stream, &graph), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);

    /* outside a capture the wait orders the side stream after the event's work */
    CHECK(cuMemsetD8(d, 0, N * sizeof(float)));
    launch();
    CHECK(cuEventRecord(fork, stream));
    CHECK(cuStreamWaitEvent(side, fork, 0));
    launch_on(side, &c, &b, &d);
    CHECK(cuStreamSynchronize(side));
    printf("%s fork: a wait outside a capture (%d wrong)\n", wrong_in(d, 3.0f) ? "FAIL" : "OK", wrong_in(d, 3.0f));
    CHECK(cuEventDestroy(fork));
    CHECK(cuEventDestroy(join));
    CHECK(cuStreamDestroy(side));
    CHECK(cuMemFree(d));
}

static void *end_elsewhere(void *result)
{
    CUgraph graph;
    CHECK(cuCtxSetCurrent(ctx));
    *(CUresult *)result = cuStreamEndCapture(stream, &graph);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    CUdevice dev;
    CUmodule module;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuModuleLoadData(&module, read_file(argv[1])));
    CHECK(cuModuleGetFunction(&vector_add, module, "vector_add"));
    float host[N];
    for (int i = 0; i < N; i++)
        host[i] = (float)i;
    CHECK(cuMemAlloc(&a, sizeof host));
    CHECK(cuMemAlloc(&b, sizeof host));
    CHECK(cuMemAlloc(&c, sizeof host));
    CHECK(cuMemcpyHtoD(a, host, sizeof host));
    CHECK(cuMemcpyHtoD(b, host, sizeof host));
    CHECK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    if (argc > 2 && !strcmp(argv[2], "fork")) { /* only what any driver answers alike (bench/gpu/libcuda_gpu.sh) */
        fork_and_join();
        printf("DONE\n");
        return 0;
    }

    /* cuGetProcAddress: each version's variant of a name */
    void *v2 = NULL, *v3 = NULL, *old = NULL, *flags = NULL, *v1 = NULL;
    CHECK(cuGetProcAddress("cuStreamGetCaptureInfo", &v1, 10010, 0, NULL));
    CHECK(cuGetProcAddress("cuStreamGetCaptureInfo", &v2, 11030, 0, NULL));
    CHECK(cuGetProcAddress("cuStreamGetCaptureInfo", &v3, 12030, 0, NULL));
    CHECK(cuGetProcAddress("cuGraphInstantiate", &old, 11000, 0, NULL));
    CHECK(cuGetProcAddress("cuGraphInstantiate", &flags, 12000, 0, NULL));
    TRUE("cuGetProcAddress gives each version its variant", v1 != v2 && v2 != v3 && old != flags &&
         flags == (void *)cuGraphInstantiateWithFlags && v3 == (void *)cuStreamGetCaptureInfo_v3);

    void *create = NULL; /* graphs built by hand are not forwarded: a stub that names itself */
    CHECK(cuGetProcAddress("cuGraphCreate", &create, 12000, 0, NULL));
    CUgraph built = NULL;
    EXPECT("a graph built by hand", ((CUresult(*)(CUgraph *, unsigned))create)(&built, 0), CUDA_ERROR_NOT_SUPPORTED);

    /* the capture's own errors */
    CUgraph graph = NULL;
    EXPECT("end of a stream not capturing", cuStreamEndCapture(stream, &graph), CUDA_ERROR_ILLEGAL_STATE);
    EXPECT("capture of the legacy stream", cuStreamBeginCapture(CU_STREAM_LEGACY, CU_STREAM_CAPTURE_MODE_GLOBAL),
           CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    EXPECT("a bad mode", cuStreamBeginCapture(stream, (CUstreamCaptureMode)7), CUDA_ERROR_INVALID_VALUE);
    CUstreamCaptureMode bad = (CUstreamCaptureMode)7;
    EXPECT("a bad thread mode", cuThreadExchangeStreamCaptureMode(&bad), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL));
    EXPECT("a second capture of the stream", cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL),
           CUDA_ERROR_ILLEGAL_STATE);
    launch();
    EXPECT("a copy from the host into the capture", cuMemcpyHtoDAsync(c, host, sizeof host, stream),
           CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    CUresult elsewhere = CUDA_SUCCESS;
    pthread_t t;
    pthread_create(&t, NULL, end_elsewhere, &elsewhere);
    pthread_join(t, NULL);
    EXPECT("a global capture ended on another thread", elsewhere, CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
    CUstreamCaptureStatus status;
    cuuint64_t id = 0, id1 = 0;
    CUgraph capturing = NULL;
    const CUgraphNode *deps = (const CUgraphNode *)&id;
    size_t ndeps = 99;
    CHECK(((CUresult(*)(CUstream, CUstreamCaptureStatus *, cuuint64_t *))v1)(stream, &status, &id1));
    CHECK(cuStreamGetCaptureInfo(stream, &status, &id, &capturing, &deps, NULL, &ndeps));
    TRUE("capture info: active, an id, a graph, no dependencies",
         status == CU_STREAM_CAPTURE_STATUS_ACTIVE && id && id == id1 && capturing && !deps && ndeps == 0);
    CUgraphExec exec = NULL;
    EXPECT("the graph under capture is not the program's to instantiate",
           cuGraphInstantiate(&exec, capturing, 0), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuStreamEndCapture(stream, &graph));
    TRUE("the capture ended as it went on", graph != NULL);
    size_t nodes = 0;
    CUgraphNode node[4];
    CHECK(cuGraphGetNodes(graph, NULL, &nodes));
    TRUE("the graph's node count is the one launch captured", nodes == 1);
    nodes = 4;
    EXPECT("the nodes themselves", cuGraphGetNodes(graph, node, &nodes), CUDA_ERROR_NOT_SUPPORTED);

    /* cuGraphInstantiateWithParams, with an upload on the stream */
    CUDA_GRAPH_INSTANTIATE_PARAMS params = {CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD, stream, NULL, 99};
    CHECK(cuGraphInstantiateWithParams(&exec, graph, &params));
    TRUE("instantiated with params", params.result_out == CUDA_GRAPH_INSTANTIATE_SUCCESS);
    CHECK(cuMemsetD8(c, 0, sizeof host));
    CHECK(cuGraphLaunch(exec, stream));
    CHECK(cuStreamSynchronize(stream));
    float out[N];
    CHECK(cuMemcpyDtoH(out, c, sizeof out));
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += out[i] != 2.0f * i;
    printf("%s launched (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);
    CUgraphExec old_exec = NULL;
    CHECK(((CUresult(*)(CUgraphExec *, CUgraph, CUgraphNode *, char *, size_t))old)(&old_exec, graph, NULL, NULL, 0));
    TRUE("instantiated the CUDA 11 way", old_exec != NULL && old_exec != exec);

    /* a synchronise of the capturing stream invalidates the capture */
    CHECK(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_RELAXED));
    EXPECT("a synchronise of the capturing stream", cuStreamSynchronize(stream),
           CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    CHECK(cuStreamIsCapturing(stream, &status));
    TRUE("invalidated by it", status == CU_STREAM_CAPTURE_STATUS_INVALIDATED);
    CUgraph none = NULL;
    pthread_create(&t, NULL, end_elsewhere, &elsewhere);
    pthread_join(t, NULL);
    EXPECT("a relaxed capture ended on another thread", elsewhere, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    EXPECT("no capture left to end", cuStreamEndCapture(stream, &none), CUDA_ERROR_ILLEGAL_STATE);

    fork_and_join();

    CUstream doomed;
    CHECK(cuStreamCreate(&doomed, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamBeginCapture(doomed, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuStreamDestroy(doomed));
    CUdeviceptr after = 0;
    EXPECT("an allocation once the capturing stream is destroyed", cuMemAlloc(&after, 4096), CUDA_SUCCESS);
    CHECK(cuMemFree(after));

    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphExecDestroy(old_exec));
    EXPECT("an executable graph destroyed twice", cuGraphExecDestroy(exec), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuGraphDestroy(graph));
    CHECK(cuStreamDestroy(stream));
    CHECK(cuCtxSynchronize());
    printf("DONE\n");
    return 0;
}

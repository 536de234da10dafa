// CUDA graphs captured from a stream, as PyTorch's torch.cuda.graph makes them: a memset and
// vectorAdd / saxpy launches captured on a non-blocking stream, in thread-local and in global
// mode, the capture queries asked during the capture, the graph instantiated, uploaded and
// launched three times, its results checked, everything destroyed. Built by nvcc like
// vector_add_runtime.cu (PTX in the fatbin for the sim backend); run by tests/guest/test_cudart_graphs.py
// and, natively and forwarded on the GPU, by bench/gpu/libcuda_gpu.sh.
//
//   graphs_runtime            the whole program; "OK graphs: ..." / "FAIL graphs: ..." lines, then
//                             DONE (the same natively)
//   graphs_runtime destroyed  launch an executable graph already destroyed (the vGPU's answer:
//                             not run natively, where that is a use after free)
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <vector>

__global__ void vectorAdd(const float *a, const float *b, float *c, int n)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

__global__ void saxpy(float a, const float *x, float *y, int n)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n)
        y[i] = a * x[i] + y[i];
}

#define CHECK(call)                                                                   \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess) {                                                      \
            std::printf("FAIL %s: %s (%s)\n", #call, cudaGetErrorName(e_), cudaGetErrorString(e_)); \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

static void expect(const char *what, cudaError_t got, cudaError_t want)
{
    std::printf("%s graphs: %s: %s\n", got == want ? "OK" : "FAIL", what, cudaGetErrorName(got));
    cudaGetLastError(); // (clears it)
}

static const int N = 1000;
static const size_t BYTES = N * sizeof(float);

struct Buffers {
    float *a, *b, *c, *y;
};

// Capture one step (c = 0; c = a + b; y = 2c + y) on `s`.
static void capture_step(const Buffers &d, cudaStream_t s)
{
    int threads = 256, blocks = (N + threads - 1) / threads;
    cudaMemsetAsync(d.c, 0, BYTES, s);
    vectorAdd<<<blocks, threads, 0, s>>>(d.a, d.b, d.c, N);
    saxpy<<<blocks, threads, 0, s>>>(2.0f, d.c, d.y, N);
}

// Launch `exec` three times on `s` from y = 1: y[i] = 1 + 3 * 2 * (a[i] + b[i]) = 1 + 18 i.
static int replay(const char *what, cudaGraphExec_t exec, const Buffers &d, cudaStream_t s)
{
    std::vector<float> y(N, 1.0f);
    CHECK(cudaMemcpy(d.y, y.data(), BYTES, cudaMemcpyHostToDevice));
    CHECK(cudaGraphUpload(exec, s));
    for (int k = 0; k < 3; k++)
        CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaMemcpy(y.data(), d.y, BYTES, cudaMemcpyDeviceToHost));
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += y[i] != 1.0f + 18.0f * i;
    std::printf("%s graphs: %s launched 3 times (%d wrong)\n", wrong ? "FAIL" : "OK", what, wrong);
    return wrong != 0;
}

static int destroyed(const Buffers &d, cudaStream_t s)
{
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    capture_step(d, s);
    CHECK(cudaStreamEndCapture(s, &graph));
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CHECK(cudaGraphExecDestroy(exec));
    cudaError_t e = cudaGraphLaunch(exec, s); // queued on the vGPU: its error comes with the synchronise
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(s);
    std::printf("graphs: destroyed executable graph launched: %s\n", cudaGetErrorName(e));
    cudaGetLastError();
    CHECK(cudaGraphDestroy(graph));
    std::printf("DONE\n");
    return 0;
}

int main(int argc, char **argv)
{
    Buffers d;
    CHECK(cudaMalloc(&d.a, BYTES));
    CHECK(cudaMalloc(&d.b, BYTES));
    CHECK(cudaMalloc(&d.c, BYTES));
    CHECK(cudaMalloc(&d.y, BYTES));
    std::vector<float> a(N), b(N);
    for (int i = 0; i < N; i++) {
        a[i] = float(i);
        b[i] = float(2 * i);
    }
    CHECK(cudaMemcpy(d.a, a.data(), BYTES, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d.b, b.data(), BYTES, cudaMemcpyHostToDevice));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); // as PyTorch's side streams
    if (argc > 1 && std::string_view(argv[1]) == "destroyed")
        return destroyed(d, s);

    // --- thread-local mode: the queries, an allocation the PyTorch way, another thread's ---
    cudaStreamCaptureStatus status;
    unsigned long long id = 0;
    CHECK(cudaStreamIsCapturing(s, &status));
    expect("not capturing before", status == cudaStreamCaptureStatusNone ? cudaSuccess : cudaErrorUnknown, cudaSuccess);
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    CHECK(cudaStreamIsCapturing(s, &status));
    CHECK(cudaStreamGetCaptureInfo(s, &status, &id));
    std::printf("%s graphs: capture info: active, id %s\n", status == cudaStreamCaptureStatusActive ? "OK" : "FAIL",
                id ? "set" : "0");
    cudaStreamCaptureStatus legacy;
    CHECK(cudaStreamIsCapturing(0, &legacy)); // (the capture is on a non-blocking stream)
    expect("the null stream is not capturing", legacy == cudaStreamCaptureStatusNone ? cudaSuccess : cudaErrorUnknown,
           cudaSuccess);
    capture_step(d, s);
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed; // the caching allocator's way
    CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    float *during = nullptr;
    CHECK(cudaMalloc(&during, 4096));
    CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    expect("relaxed thread's cudaMalloc during capture", cudaSuccess, cudaSuccess);
    cudaError_t other = cudaErrorUnknown;
    float *elsewhere = nullptr;
    std::thread([&] { other = cudaMalloc(&elsewhere, 4096); }).join();
    expect("another thread's cudaMalloc during a thread-local capture", other, cudaSuccess);
    cudaGraph_t graph;
    CHECK(cudaStreamEndCapture(s, &graph));
    CHECK(cudaStreamIsCapturing(s, &status));
    expect("not capturing after", status == cudaStreamCaptureStatusNone ? cudaSuccess : cudaErrorUnknown, cudaSuccess);
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    if (replay("thread-local graph", exec, d, s))
        return 1;
    CHECK(cudaFree(during));
    CHECK(cudaFree(elsewhere));

    // --- global mode: unsafe calls are refused and invalidate the capture ---
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    capture_step(d, s);
    std::thread([&] { other = cudaMalloc(&elsewhere, 4096); }).join();
    expect("another thread's cudaMalloc during a global capture", other, cudaErrorStreamCaptureUnsupported);
    expect("cudaMalloc during global capture", cudaMalloc(&during, 4096), cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamIsCapturing(s, &status));
    expect("invalidated", status == cudaStreamCaptureStatusInvalidated ? cudaSuccess : cudaErrorUnknown, cudaSuccess);
    cudaGraph_t none = nullptr;
    expect("end of an invalidated capture", cudaStreamEndCapture(s, &none), cudaErrorStreamCaptureInvalidated);
    expect("no graph from it", none == nullptr ? cudaSuccess : cudaErrorUnknown, cudaSuccess);

    // a synchronous copy runs on the legacy stream, which waits for no non-blocking stream: allowed
    // (as the H100's driver answers), and the capture goes on; it would wait for a blocking
    // stream, so not while one captures
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    std::vector<float> host(N);
    expect("synchronous cudaMemcpy during a global capture of a non-blocking stream",
           cudaMemcpy(d.c, host.data(), BYTES, cudaMemcpyHostToDevice), cudaSuccess);
    cudaGraph_t empty = nullptr;
    expect("end after it", cudaStreamEndCapture(s, &empty), cudaSuccess);
    if (empty)
        CHECK(cudaGraphDestroy(empty));
    cudaStream_t blocking;
    CHECK(cudaStreamCreate(&blocking));
    unsigned flags = 1;
    CHECK(cudaStreamGetFlags(blocking, &flags));
    expect("a stream's flags", flags == cudaStreamDefault ? cudaSuccess : cudaErrorUnknown, cudaSuccess);
    CHECK(cudaStreamGetFlags(s, &flags));
    expect("the capturing stream's flags", flags == cudaStreamNonBlocking ? cudaSuccess : cudaErrorUnknown,
           cudaSuccess);
    CHECK(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeGlobal));
    expect("synchronous cudaMemcpy while a blocking stream captures",
           cudaMemcpy(d.c, host.data(), BYTES, cudaMemcpyHostToDevice), cudaErrorStreamCaptureImplicit);
    expect("end of that capture", cudaStreamEndCapture(blocking, &none), cudaErrorStreamCaptureInvalidated);
    CHECK(cudaStreamDestroy(blocking));

    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    expect("cudaDeviceSynchronize during capture", cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
    expect("end after that", cudaStreamEndCapture(s, &none), cudaErrorStreamCaptureInvalidated);

    cudaStream_t side;
    cudaEvent_t ev;
    CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    CHECK(cudaEventRecord(ev, side));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    capture_step(d, s);
    expect("another stream waits for an event during a global capture", cudaStreamWaitEvent(side, ev, 0),
           cudaSuccess);
    mode = cudaStreamCaptureModeRelaxed;
    CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    CHECK(cudaMalloc(&during, 4096));
    CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    cudaGraph_t global_graph;
    CHECK(cudaStreamEndCapture(s, &global_graph));
    cudaGraphExec_t global_exec;
    CHECK(cudaGraphInstantiateWithFlags(&global_exec, global_graph, 0));
    if (replay("global graph", global_exec, d, s))
        return 1;
    if (replay("thread-local graph again", exec, d, s))
        return 1;

    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphExecDestroy(global_exec));
    CHECK(cudaGraphDestroy(graph));
    CHECK(cudaGraphDestroy(global_graph));
    CHECK(cudaFree(during));
    CHECK(cudaEventDestroy(ev));
    CHECK(cudaStreamDestroy(side));
    CHECK(cudaStreamDestroy(s));
    for (float *p : {d.a, d.b, d.c, d.y})
        CHECK(cudaFree(p));
    CHECK(cudaDeviceSynchronize());
    std::printf("OK graphs: everything destroyed\n");
    std::printf("DONE\n");
    return 0;
}

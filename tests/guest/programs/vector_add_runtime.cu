// A CUDA runtime program in the style of NVIDIA's cuda-samples (vectorAdd), built by nvcc with
// the runtime linked static (nvcc's default) or shared (-cudart shared), run unmodified on
// kvmgpu's libcuda.so.1 by tests/guest/test_cudart.py. Its kernels reach the driver as the fatbin
// the runtime registers; build it with PTX in that fatbin for the sim backend
// (-gencode arch=compute_80,code=compute_80).
//
//   vector_add_runtime          the whole program; prints OK/FAIL lines, then DONE
//   vector_add_runtime quota    allocate past the vGPU's memory
//   vector_add_runtime square   launch a kernel the sim backend has no twin of (an error, not a crash)
//   vector_add_runtime threads  four host threads, each its own stream, allocations and launches
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

__device__ float scale; // a module global, through cudaMemcpyToSymbol

__global__ void scale_by_global(float *x, int n)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n)
        x[i] *= scale;
}

__global__ void square(float *x, int n)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n)
        x[i] = x[i] * x[i];
}

#define CHECK(call)                                                                   \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess) {                                                      \
            std::printf("FAIL %s: %s (%s)\n", #call, cudaGetErrorName(e_), cudaGetErrorString(e_)); \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

static void CUDART_CB host_fn(void *flag)
{
    *static_cast<int *>(flag) += 1;
}

static void CUDART_CB stream_callback(cudaStream_t, cudaError_t status, void *flag)
{
    *static_cast<int *>(flag) += status == cudaSuccess ? 10 : 1000;
}

static int quota()
{
    size_t free_bytes = 0, total = 0;
    CHECK(cudaMemGetInfo(&free_bytes, &total));
    void *p = nullptr;
    cudaError_t e = cudaMalloc(&p, total + 1);
    std::printf("%s cudaMalloc(total + 1) = %s\n", e == cudaErrorMemoryAllocation ? "OK" : "FAIL",
                cudaGetErrorName(e));
    cudaGetLastError(); // (clears it)
    CHECK(cudaMalloc(&p, 1 << 20));
    CHECK(cudaFree(p));
    std::printf("DONE\n");
    return 0;
}

static int unknown_kernel()
{
    float *x = nullptr;
    CHECK(cudaMalloc(&x, 1024 * sizeof(float)));
    square<<<4, 256>>>(x, 1024);
    cudaError_t launched = cudaGetLastError(), synced = cudaDeviceSynchronize();
    cudaError_t e = launched != cudaSuccess ? launched : synced;
    std::printf("%s square: %s\n", e != cudaSuccess ? "OK" : "FAIL", cudaGetErrorName(e));
    std::printf("DONE\n");
    return 0;
}

static int thread_work(int t)
{
    const int n = 10000;
    const size_t bytes = n * sizeof(float);
    std::vector<float> a(n, float(t)), b(n, 1.0f), c(n);
    float *da = nullptr, *db = nullptr, *dc = nullptr;
    cudaStream_t s;
    if (cudaStreamCreate(&s) || cudaMalloc(&da, bytes) || cudaMalloc(&db, bytes) || cudaMalloc(&dc, bytes))
        return -1;
    for (int round = 0; round < 20; round++) {
        cudaMemcpyAsync(da, a.data(), bytes, cudaMemcpyHostToDevice, s);
        cudaMemcpyAsync(db, b.data(), bytes, cudaMemcpyHostToDevice, s);
        vectorAdd<<<(n + 255) / 256, 256, 0, s>>>(da, db, dc, n);
        cudaMemcpyAsync(c.data(), dc, bytes, cudaMemcpyDeviceToHost, s);
        cudaStreamSynchronize(s);
    }
    int wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += c[i] != t + 1.0f;
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    cudaStreamDestroy(s);
    return cudaGetLastError() != cudaSuccess ? -1 : wrong;
}

static int threads()
{
    int wrong[4] = {0, 0, 0, 0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 4; t++)
        workers.emplace_back([t, &wrong] { wrong[t] = thread_work(t); });
    for (auto &w : workers)
        w.join();
    int bad = wrong[0] | wrong[1] | wrong[2] | wrong[3];
    std::printf("%s four threads (%d %d %d %d)\n", bad ? "FAIL" : "OK", wrong[0], wrong[1], wrong[2], wrong[3]);
    std::printf("DONE\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !std::strcmp(argv[1], "threads"))
        return threads();
    if (argc > 1 && !std::strcmp(argv[1], "quota"))
        return quota();
    if (argc > 1 && !std::strcmp(argv[1], "square"))
        return unknown_kernel();
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("%s device: count=%d name=%s total=%zu cc=%d.%d\n", count == 1 ? "OK" : "FAIL", count, prop.name,
                prop.totalGlobalMem, prop.major, prop.minor);
    // Modules load when first used (CUDA_MODULE_LOADING=LAZY, CUDA's default): asking for the
    // __device__ variable's size loads this program's, whose memory then counts from the start.
    size_t scale_size = 0;
    CHECK(cudaGetSymbolSize(&scale_size, scale));
    size_t free_at_start = 0, total_at_start = 0;
    CHECK(cudaMemGetInfo(&free_at_start, &total_at_start));

    const int n = 50000;
    const size_t bytes = n * sizeof(float);
    std::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; i++) {
        a[i] = std::rand() / static_cast<float>(RAND_MAX);
        b[i] = std::rand() / static_cast<float>(RAND_MAX);
    }
    float *da = nullptr, *db = nullptr, *dc = nullptr;
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMalloc(&db, bytes));
    CHECK(cudaMalloc(&dc, bytes));
    CHECK(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b.data(), bytes, cudaMemcpyHostToDevice));
    int threads = 256, blocks = (n + threads - 1) / threads;
    vectorAdd<<<blocks, threads>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));
    int wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += c[i] != a[i] + b[i];
    std::printf("%s vectorAdd (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);

    // saxpy on a stream of its own, async copies, events around the kernel
    cudaStream_t stream;
    cudaEvent_t start, stop;
    CHECK(cudaStreamCreate(&stream));
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    CHECK(cudaMemcpyAsync(dc, b.data(), bytes, cudaMemcpyHostToDevice, stream));
    CHECK(cudaEventRecord(start, stream));
    saxpy<<<blocks, threads, 0, stream>>>(2.0f, da, dc, n);
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaMemcpyAsync(c.data(), dc, bytes, cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += c[i] != 2.0f * a[i] + b[i];
    std::printf("%s saxpy on a stream (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);
    std::printf("%s elapsed time not negative\n", ms >= 0 ? "OK" : "FAIL");
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
    CHECK(cudaStreamDestroy(stream));

    CHECK(cudaMemset(dc, 0, bytes));
    CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));
    wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += c[i] != 0.0f;
    std::printf("%s memset (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);

    // two streams ordered by an event, a host function and a callback after their work
    {
        int least = 1, greatest = 1, flag = 0;
        CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
        cudaStream_t s1, s2;
        cudaEvent_t done;
        CHECK(cudaStreamCreateWithPriority(&s1, cudaStreamNonBlocking, greatest));
        CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
        CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
        vectorAdd<<<blocks, threads, 0, s1>>>(da, db, dc, n); // c = a + b
        CHECK(cudaEventRecord(done, s1));
        CHECK(cudaStreamWaitEvent(s2, done, 0));
        saxpy<<<blocks, threads, 0, s2>>>(2.0f, da, dc, n); // c = 2a + (a + b)
        CHECK(cudaLaunchHostFunc(s2, host_fn, &flag));
        CHECK(cudaStreamAddCallback(s2, stream_callback, &flag, 0));
        CHECK(cudaMemcpyAsync(c.data(), dc, bytes, cudaMemcpyDeviceToHost, s2));
        CHECK(cudaStreamSynchronize(s2));
        wrong = 0;
        for (int i = 0; i < n; i++)
            wrong += c[i] != 2.0f * a[i] + (a[i] + b[i]);
        std::printf("%s streams ordered by an event (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);
        std::printf("%s streams host function and callback (%d)\n", flag == 11 ? "OK" : "FAIL", flag);
        std::printf("%s stream priorities (%d..%d)\n", least >= greatest ? "OK" : "FAIL", least, greatest);
        CHECK(cudaEventDestroy(done));
        CHECK(cudaStreamDestroy(s1));
        CHECK(cudaStreamDestroy(s2));
        char bus[32] = "";
        CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, 0));
        std::printf("%s PCI bus id %s\n", std::strchr(bus, ':') ? "OK" : "FAIL", bus);
    }

    // a __device__ variable: set, used by a kernel, read back, its address
    {
        float s = 2.5f, back = 0;
        float *where = nullptr;
        CHECK(cudaMemcpyToSymbol(scale, &s, sizeof s));
        CHECK(cudaMemcpy(dc, a.data(), bytes, cudaMemcpyHostToDevice));
        scale_by_global<<<blocks, threads>>>(dc, n);
        CHECK(cudaGetLastError());
        CHECK(cudaMemcpyFromSymbol(&back, scale, sizeof back));
        CHECK(cudaGetSymbolAddress(reinterpret_cast<void **>(&where), scale));
        CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));
        wrong = 0;
        for (int i = 0; i < n; i++)
            wrong += c[i] != a[i] * 2.5f;
        std::printf("%s symbols (%d wrong, read back %g)\n", wrong || back != s || !where ? "FAIL" : "OK", wrong, back);
    }

    // preferences the driver may ignore: kept and read back
    {
        cudaFuncCache cache = cudaFuncCachePreferNone;
        CHECK(cudaDeviceSetCacheConfig(cudaFuncCachePreferShared));
        CHECK(cudaDeviceGetCacheConfig(&cache));
        CHECK(cudaFuncSetCacheConfig(vectorAdd, cudaFuncCachePreferL1));
        std::printf("%s cache preferences (%d)\n", cache == cudaFuncCachePreferShared ? "OK" : "FAIL", (int)cache);
    }

    // unified addressing: cudaMemcpyDefault finds the direction, pointer attributes
    CHECK(cudaMemcpy(dc, a.data(), bytes, cudaMemcpyDefault));
    CHECK(cudaMemcpy(db, dc, bytes, cudaMemcpyDefault));
    CHECK(cudaMemcpy(c.data(), db, bytes, cudaMemcpyDefault));
    std::printf("%s unified copies\n", std::memcmp(c.data(), a.data(), bytes) ? "FAIL" : "OK");
    cudaPointerAttributes on_device, on_host;
    CHECK(cudaPointerGetAttributes(&on_device, db + 10));
    CHECK(cudaPointerGetAttributes(&on_host, a.data()));
    std::printf("%s unified pointer attributes (device %d at %d, host %d)\n",
                on_device.type == cudaMemoryTypeDevice && on_device.device == 0 && on_device.devicePointer == db + 10 &&
                        on_host.type == cudaMemoryTypeUnregistered ? "OK" : "FAIL",
                (int)on_device.type, on_device.device, (int)on_host.type);

    // page-locked host memory (copies from and to it, async on a stream), a registered range
    float *pinned_in = nullptr, *pinned_out = nullptr;
    CHECK(cudaMallocHost(&pinned_in, bytes));
    CHECK(cudaHostAlloc(&pinned_out, bytes, cudaHostAllocDefault));
    for (int i = 0; i < n; i++)
        pinned_in[i] = a[i] * 3.0f;
    CHECK(cudaStreamCreate(&stream));
    CHECK(cudaMemcpyAsync(dc, pinned_in, bytes, cudaMemcpyHostToDevice, stream));
    CHECK(cudaMemcpyAsync(pinned_out, dc, bytes, cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    CHECK(cudaStreamDestroy(stream));
    std::printf("%s page-locked copies\n", std::memcmp(pinned_in, pinned_out, bytes) ? "FAIL" : "OK");
    CHECK(cudaHostRegister(c.data(), bytes, cudaHostRegisterDefault));
    CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));
    CHECK(cudaHostUnregister(c.data()));
    std::printf("%s page-locked registered range\n", std::memcmp(c.data(), pinned_in, bytes) ? "FAIL" : "OK");
    CHECK(cudaFreeHost(pinned_in));
    CHECK(cudaFreeHost(pinned_out));

    // what a VM is not given: an error, not a crash
    void *managed = nullptr;
    cudaError_t e = cudaMallocManaged(&managed, 4096);
    std::printf("%s managed memory refused: %s\n", e != cudaSuccess ? "OK" : "FAIL", cudaGetErrorName(e));
    cudaGetLastError();
    float *mapped = nullptr;
    e = cudaHostAlloc(&mapped, 4096, cudaHostAllocMapped);
    std::printf("%s mapped page-locked memory refused: %s\n", e != cudaSuccess ? "OK" : "FAIL", cudaGetErrorName(e));
    cudaGetLastError();
    e = cudaFreeHost(a.data()); // not from cudaMallocHost
    std::printf("%s freeing what is not page-locked: %s\n", e != cudaSuccess ? "OK" : "FAIL", cudaGetErrorName(e));
    cudaGetLastError();

    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    size_t free_bytes = 0, total = 0;
    CHECK(cudaMemGetInfo(&free_bytes, &total));
    std::printf("%s everything freed (%zu free as at the start, of %zu)\n", free_bytes == free_at_start ? "OK" : "FAIL",
                free_bytes, total);

    // a reset tears the runtime's state down (its context-local storage destructors run); the
    // runtime then starts again on the next call
    CHECK(cudaDeviceReset());
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(c.data(), da, bytes, cudaMemcpyDeviceToHost));
    std::printf("%s after a reset\n", std::memcmp(c.data(), a.data(), bytes) ? "FAIL" : "OK");
    CHECK(cudaFree(da));
    std::printf("DONE\n");
    return 0;
}

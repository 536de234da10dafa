// What PyTorch's eager path, cuBLAS and cuDNN ask of the CUDA runtime beyond vectorAdd, built by
// nvcc and run unmodified on kvmgpu's libcuda.so.1 by tests/guest/test_cudart.py (the sim backend
// checks bytes; on the GPU machine bench/gpu/libcuda_gpu.sh compares it with the native run):
// device properties, function attributes and occupancy, cudaLaunchKernelExC, 2D and 3D copies and
// memsets, stream-ordered allocation inside the quota, the memory pool, and context limits.
// Prints OK/FAIL lines, then DONE; the lines that name a number print what the device said, so
// that the native run's and the forwarded run's can be compared ("--" lines: what a VM refuses
// and a GPU does, and the stream-ordered allocator's accounting, which differ by design).
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstring>
#include <vector>

__global__ void vectorAdd(const float *a, const float *b, float *c, int n)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

#define CHECK(call)                                                                                         \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) {                                                                            \
            std::printf("FAIL %s: %s (%s)\n", #call, cudaGetErrorName(e_), cudaGetErrorString(e_));      \
            return 1;                                                                                       \
        }                                                                                                   \
    } while (0)

static int properties()
{
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, 0));
    int attr = 0;
    CHECK(cudaDeviceGetAttribute(&attr, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    std::printf("%s properties: cc=%d.%d sms=%d warp=%d threads/block=%d threads/sm=%d block=%dx%dx%d "
                "grid=%dx%dx%d smem/block=%zu smem/sm=%zu optin=%zu regs/block=%d regs/sm=%d const=%zu l2=%d "
                "bus=%d pitch=%zu unified=%d concurrent=%d engines=%d\n",
                (size_t)attr == p.sharedMemPerBlockOptin ? "OK" : "FAIL", p.major, p.minor, p.multiProcessorCount,
                p.warpSize, p.maxThreadsPerBlock, p.maxThreadsPerMultiProcessor, p.maxThreadsDim[0],
                p.maxThreadsDim[1], p.maxThreadsDim[2], p.maxGridSize[0], p.maxGridSize[1], p.maxGridSize[2],
                p.sharedMemPerBlock, p.sharedMemPerMultiprocessor, p.sharedMemPerBlockOptin, p.regsPerBlock,
                p.regsPerMultiprocessor, p.totalConstMem, p.l2CacheSize, p.memoryBusWidth, p.memPitch,
                p.unifiedAddressing, p.concurrentKernels, p.asyncEngineCount);
    // (not compared with the native run: a VM is not given managed memory, so the vGPU says 0)
    std::printf("-- managed memory: %d\n", p.managedMemory);
    return 0;
}

static int functions()
{
    cudaFuncAttributes a;
    CHECK(cudaFuncGetAttributes(&a, vectorAdd));
    std::printf("OK function attributes: threads=%d dynamic smem=%d\n", a.maxThreadsPerBlock,
                a.maxDynamicSharedSizeBytes);
    // more than 48 KiB of dynamic shared memory: allowed once asked for, as cuBLAS and PyTorch do
    const int big = 100 * 1024;
    CHECK(cudaFuncSetAttribute(vectorAdd, cudaFuncAttributeMaxDynamicSharedMemorySize, big));
    CHECK(cudaFuncSetAttribute(vectorAdd, cudaFuncAttributeMaxDynamicSharedMemorySize, big)); // (the same again)
    CHECK(cudaFuncGetAttributes(&a, vectorAdd));
    const int n = 1000;
    float *d = nullptr;
    CHECK(cudaMalloc(&d, 3 * n * sizeof(float)));
    std::vector<float> h(3 * n);
    for (int i = 0; i < 2 * n; i++)
        h[i] = float(i % 97);
    CHECK(cudaMemcpy(d, h.data(), 2 * n * sizeof(float), cudaMemcpyHostToDevice));
    vectorAdd<<<(n + 255) / 256, 256, big>>>(d, d + n, d + 2 * n, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(h.data() + 2 * n, d + 2 * n, n * sizeof(float), cudaMemcpyDeviceToHost));
    int wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += h[2 * n + i] != h[i] + h[n + i];
    std::printf("%s launch with %d bytes of dynamic shared memory (attribute %d, %d wrong)\n",
                a.maxDynamicSharedSizeBytes == big && wrong == 0 ? "OK" : "FAIL", big, a.maxDynamicSharedSizeBytes,
                wrong);

    int blocks = 0, min_grid = 0, block = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, vectorAdd, 256, 0));
    CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, vectorAdd, 0, 0));
    size_t avail = 0;
    CHECK(cudaOccupancyAvailableDynamicSMemPerBlock(&avail, vectorAdd, 2, 256));
    std::printf("%s occupancy: %d blocks of 256, best block %d grid %d, %zu bytes for 2 blocks\n",
                blocks > 0 && block > 0 && min_grid > 0 ? "OK" : "FAIL", blocks, block, min_grid, avail);

    // cudaLaunchKernelExC: a launch attribute that is a hint runs; clusters are refused by name
    cudaLaunchConfig_t config = {};
    cudaLaunchAttribute attrs[1];
    config.gridDim = dim3((n + 127) / 128);
    config.blockDim = dim3(128);
    attrs[0].id = cudaLaunchAttributePriority;
    attrs[0].val.priority = 0;
    config.attrs = attrs;
    config.numAttrs = 1;
    CHECK(cudaMemset(d + 2 * n, 0, n * sizeof(float)));
    const float *a_ = d, *b_ = d + n;
    float *c_ = d + 2 * n;
    int n_ = n;
    void *args[] = {&a_, &b_, &c_, &n_};
    CHECK(cudaLaunchKernelExC(&config, (const void *)vectorAdd, args));
    CHECK(cudaMemcpy(h.data() + 2 * n, d + 2 * n, n * sizeof(float), cudaMemcpyDeviceToHost));
    wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += h[2 * n + i] != h[i] + h[n + i];
    // clusters of 2 blocks (Hopper's cuBLAS kernels launch so), then a launch of the same kernel
    // with no clusters and an odd grid, which clusters of 2 could not tile
    attrs[0].id = cudaLaunchAttributeClusterDimension;
    attrs[0].val.clusterDim.x = 2;
    attrs[0].val.clusterDim.y = attrs[0].val.clusterDim.z = 1;
    CHECK(cudaMemset(d + 2 * n, 0, n * sizeof(float)));
    CHECK(cudaLaunchKernelExC(&config, (const void *)vectorAdd, args));
    CHECK(cudaMemcpy(h.data() + 2 * n, d + 2 * n, n * sizeof(float), cudaMemcpyDeviceToHost));
    int wrong_clusters = 0;
    for (int i = 0; i < n; i++)
        wrong_clusters += h[2 * n + i] != h[i] + h[n + i];
    CHECK(cudaMemset(d + 2 * n, 0, n * sizeof(float)));
    vectorAdd<<<(n + 127) / 128 - 1, 128>>>(d, d + n, d + 2 * n, n); // 7 blocks: the first 896
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(h.data() + 2 * n, d + 2 * n, n * sizeof(float), cudaMemcpyDeviceToHost));
    int wrong_after = 0;
    for (int i = 0; i < n; i++)
        wrong_after += h[2 * n + i] != (i < 896 ? h[i] + h[n + i] : 0.0f);
    CHECK(cudaFuncGetAttributes(&a, vectorAdd));
    std::printf("%s cudaLaunchKernelExC (%d wrong; in clusters of 2: %d wrong; then 7 blocks: %d wrong; "
                "required cluster width %d)\n",
                wrong == 0 && wrong_clusters == 0 && wrong_after == 0 && a.requiredClusterWidth == 0 ? "OK" : "FAIL",
                wrong, wrong_clusters, wrong_after, a.requiredClusterWidth);
    int active_clusters = 0;
    attrs[0].id = cudaLaunchAttributeClusterDimension; // (the clusters of 2 above)
    CHECK(cudaOccupancyMaxActiveClusters(&active_clusters, (const void *)vectorAdd, &config));
    std::printf("%s max active clusters of 2 blocks of 128: %d\n", active_clusters > 0 ? "OK" : "FAIL",
                active_clusters);
    attrs[0].id = cudaLaunchAttributeCooperative;
    attrs[0].val.cooperative = 1;
    cudaError_t e = cudaLaunchKernelExC(&config, (const void *)vectorAdd, args);
    cudaGetLastError();
    std::printf("-- a cooperative launch: %s\n", cudaGetErrorName(e)); // (a GPU runs it; a VM refuses)
    CHECK(cudaFree(d));
    return 0;
}

static int copies()
{
    // a 40x7 block of bytes out of a 64-byte-pitch host matrix into a 96-byte-pitch device one and back
    const size_t w = 40, h = 7, hp = 64, dp = 96;
    std::vector<unsigned char> src(hp * h), back(hp * h, 0xEE);
    for (size_t i = 0; i < src.size(); i++)
        src[i] = (unsigned char)(i * 7 + 3);
    unsigned char *d = nullptr, *d2 = nullptr;
    CHECK(cudaMalloc(&d, dp * h));
    CHECK(cudaMalloc(&d2, dp * h));
    CHECK(cudaMemset(d, 0, dp * h));
    CHECK(cudaMemcpy2D(d, dp, src.data(), hp, w, h, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2DAsync(d2, dp, d, dp, w, h, cudaMemcpyDeviceToDevice, 0));
    CHECK(cudaMemcpy2D(back.data(), hp, d2, dp, w, h, cudaMemcpyDeviceToHost));
    int wrong = 0;
    for (size_t r = 0; r < h; r++)
        for (size_t c = 0; c < hp; c++)
            wrong += back[r * hp + c] != (c < w ? src[r * hp + c] : 0xEE);
    std::printf("%s cudaMemcpy2D host->device->device->host (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);

    // cudaMemset2D: the rows set, the bytes between them not
    CHECK(cudaMemset2D(d, dp, 0x5A, w, h));
    std::vector<unsigned char> all(dp * h);
    CHECK(cudaMemcpy(all.data(), d, dp * h, cudaMemcpyDeviceToHost));
    wrong = 0;
    for (size_t r = 0; r < h; r++)
        for (size_t c = 0; c < dp; c++)
            wrong += all[r * dp + c] != (c < w ? 0x5A : 0);
    std::printf("%s cudaMemset2D (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);

    // cudaMemcpy3D: 3 slices of 4 rows of 16 bytes, host to device to host
    const size_t X = 16, Y = 4, Z = 3;
    std::vector<unsigned char> cube(X * Y * Z), cube_back(X * Y * Z);
    for (size_t i = 0; i < cube.size(); i++)
        cube[i] = (unsigned char)(i ^ 0x3C);
    cudaPitchedPtr dev;
    CHECK(cudaMalloc(&dev.ptr, 32 * Y * Z));
    dev.pitch = 32, dev.xsize = X, dev.ysize = Y;
    cudaMemcpy3DParms p = {};
    p.srcPtr = make_cudaPitchedPtr(cube.data(), X, X, Y);
    p.dstPtr = dev;
    p.extent = make_cudaExtent(X, Y, Z);
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3D(&p));
    p.srcPtr = dev;
    p.dstPtr = make_cudaPitchedPtr(cube_back.data(), X, X, Y);
    p.kind = cudaMemcpyDeviceToHost;
    CHECK(cudaMemcpy3D(&p));
    std::printf("%s cudaMemcpy3D (%s)\n", cube == cube_back ? "OK" : "FAIL", cube == cube_back ? "same" : "differ");
    CHECK(cudaFree(dev.ptr));
    CHECK(cudaFree(d));
    CHECK(cudaFree(d2));
    return 0;
}

static int stream_ordered()
{
    size_t free0 = 0, total = 0;
    CHECK(cudaMemGetInfo(&free0, &total));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    void *p = nullptr;
    cudaError_t e = cudaMallocAsync(&p, total + 1, s);
    cudaGetLastError();
    std::printf("%s cudaMallocAsync(total + 1) = %s\n", e == cudaErrorMemoryAllocation ? "OK" : "FAIL",
                cudaGetErrorName(e));
    CHECK(cudaMallocAsync(&p, 1 << 20, s));
    CHECK(cudaMemsetAsync(p, 7, 1 << 20, s));
    size_t free1 = 0;
    CHECK(cudaMemGetInfo(&free1, &total));
    unsigned char last = 0;
    CHECK(cudaMemcpyAsync(&last, (char *)p + (1 << 20) - 1, 1, cudaMemcpyDeviceToHost, s));
    CHECK(cudaFreeAsync(p, s));
    CHECK(cudaStreamSynchronize(s));
    size_t free2 = 0;
    CHECK(cudaMemGetInfo(&free2, &total));
    std::printf("%s cudaMallocAsync charged to the quota (%zu less, then back: %d; last byte %d)\n",
                free0 - free1 >= (1 << 20) && free2 == free0 && last == 7 ? "OK" : "FAIL", free0 - free1,
                free2 == free0, last);

    cudaMemPool_t pool;
    CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
    unsigned long long threshold = 64ull << 20, read = 0;
    CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &read));
    CHECK(cudaMemPoolTrimTo(pool, 0));
    std::printf("%s memory pool release threshold (%llu)\n", read == threshold ? "OK" : "FAIL", read);
    CHECK(cudaStreamDestroy(s));
    return 0;
}

static int limits()
{
    size_t stack = 0, heap = 0, fifo = 0;
    CHECK(cudaDeviceGetLimit(&stack, cudaLimitStackSize));
    CHECK(cudaDeviceGetLimit(&heap, cudaLimitMallocHeapSize));
    CHECK(cudaDeviceGetLimit(&fifo, cudaLimitPrintfFifoSize));
    CHECK(cudaDeviceSetLimit(cudaLimitStackSize, stack)); // the same value: nothing to change
    cudaError_t e = cudaDeviceSetLimit(cudaLimitMallocHeapSize, heap * 2);
    cudaGetLastError();
    std::printf("%s limits: stack=%zu heap=%zu fifo=%zu\n", stack && heap && fifo ? "OK" : "FAIL", stack, heap, fifo);
    std::printf("-- a larger malloc heap: %s\n", cudaGetErrorName(e)); // (a GPU sets it; a VM refuses)
    return 0;
}

// cuTensorMapEncodeTiled, as CUTLASS and cuBLAS reach it: through the runtime's driver entry point
static int tensor_map()
{
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    auto encode = reinterpret_cast<decltype(&cuTensorMapEncodeTiled)>(fn);
    unsigned char *d = nullptr;
    CHECK(cudaMalloc(&d, 64 * 64));
    CUtensorMap map;
    cuuint64_t dims[2] = {64, 64}, strides[1] = {64};
    cuuint32_t box[2] = {16, 4}, estrides[2] = {1, 1};
    CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, d, dims, strides, box, estrides,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    std::printf("%s tensor map of a 64x64 tensor (%d)\n", r == CUDA_SUCCESS ? "OK" : "FAIL", (int)r);
    void *replace = nullptr;
    CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapReplaceAddress", &replace, 12000, cudaEnableDefault, &found));
    unsigned char *d2 = nullptr;
    CHECK(cudaMalloc(&d2, 64 * 64));
    r = reinterpret_cast<decltype(&cuTensorMapReplaceAddress)>(replace)(&map, d2);
    std::printf("%s tensor map moved to another tensor (%d)\n", r == CUDA_SUCCESS ? "OK" : "FAIL", (int)r);
    CHECK(cudaFree(d2));
    void *im2col = nullptr;
    CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeIm2col", &im2col, 12000, cudaEnableDefault, &found));
    cuuint64_t nhwc[4] = {16, 4, 4, 2}, nhwc_strides[3] = {16, 64, 256}; // 16 channels, 4x4 pixels, batch 2
    int lower[2] = {0, 0}, upper[2] = {0, 0};
    cuuint32_t ones[4] = {1, 1, 1, 1};
    r = reinterpret_cast<decltype(&cuTensorMapEncodeIm2col)>(im2col)(
        &map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, d, nhwc, nhwc_strides, lower, upper, 16, 16, ones,
        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    std::printf("%s im2col tensor map of an NHWC tensor (%d)\n", r == CUDA_SUCCESS ? "OK" : "FAIL", (int)r);
    cuuint64_t past[2] = {64, 65}; // a row past the allocation
    r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, d, past, strides, box, estrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
               CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    std::printf("-- a tensor map past its allocation: %d\n", (int)r); // (a GPU encodes it; a VM refuses)
    CHECK(cudaFree(d));
    return 0;
}

int main()
{
    if (properties() || functions() || copies() || stream_ordered() || limits() || tensor_map())
        return 1;
    std::printf("DONE\n");
    return 0;
}

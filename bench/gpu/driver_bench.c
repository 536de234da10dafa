/* The CUDA driver API's costs as a C program sees them, on whatever libcuda.so.1 the loader finds:
 * the GPU's own driver (native) or kvmgpu's guest library (forwarded). bench/gpu/driver_bench.py
 * runs it both ways, side by side, and prints the ratios.
 *
 *     driver_bench KERNELS.ptx [MAX_MIB]      # prints "figure value" lines, then DONE
 *
 * Figures (best of 5 repetitions each):
 *   queued_launch_us      a saxpy launch on one element, 2000 in a row, timed until the last call
 *                         returns (the work is waited for after the clock stops)
 *   launch_sync_us        a launch and cuCtxSynchronize, 500 in a row
 *   htod_pageable_GBps_<n>M, dtoh_pageable_GBps_<n>M   cuMemcpyHtoD / DtoH from malloc'd memory
 *   htod_pinned_GBps_<n>M, dtoh_pinned_GBps_<n>M       the same from cuMemAllocHost memory
 *   (n = 1, 16, 64, 256, 1024 MiB, up to MAX_MIB, page-locked up to 64 MiB; HtoD timed until the copy
 *   has landed) */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        CUresult rc_ = (call);                                                                     \
        if (rc_ != CUDA_SUCCESS) {                                                                 \
            const char *name_ = NULL;                                                              \
            cuGetErrorName(rc_, &name_);                                                           \
            printf("FAIL %s: %s\n", #call, name_ ? name_ : "?");                                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n)
        exit(2);
    text[n] = '\0';
    fclose(f);
    return text;
}

static CUfunction saxpy;
static CUdeviceptr one;

static void launch(void)
{
    float a = 2.0f;
    int n = 1;
    void *args[] = {&a, &one, &one, &n};
    CHECK(cuLaunchKernel(saxpy, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
}

static void launches(void)
{
    const int count = 2000;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        CHECK(cuCtxSynchronize());
        double t = now();
        for (int i = 0; i < count; i++)
            launch();
        t = now() - t;
        CHECK(cuCtxSynchronize());
        if (t < best)
            best = t;
    }
    printf("queued_launch_us %.3f\n", best / count * 1e6);
    best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t = now();
        for (int i = 0; i < 500; i++) {
            launch();
            CHECK(cuCtxSynchronize());
        }
        t = now() - t;
        if (t < best)
            best = t;
    }
    printf("launch_sync_us %.3f\n", best / 500 * 1e6);
}

static void copies(const char *kind, char *host, CUdeviceptr dev, size_t max_mib)
{
    static const size_t sizes[] = {1, 16, 64, 256, 1024};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes && sizes[s] <= max_mib; s++) {
        size_t bytes = sizes[s] << 20;
        int reps = sizes[s] >= 256 ? 3 : sizes[s] >= 16 ? 5 : 20;
        double best_h = 1e30, best_d = 1e30;
        for (int round = 0; round < 5; round++) {
            double t = now();
            for (int i = 0; i < reps; i++)
                CHECK(cuMemcpyHtoD(dev, host, bytes));
            CHECK(cuCtxSynchronize());
            t = now() - t;
            if (t < best_h)
                best_h = t;
            t = now();
            for (int i = 0; i < reps; i++)
                CHECK(cuMemcpyDtoH(host, dev, bytes));
            t = now() - t;
            if (t < best_d)
                best_d = t;
        }
        printf("htod_%s_GBps_%zuM %.3f\n", kind, sizes[s], bytes * (double)reps / best_h / 1e9);
        printf("dtoh_%s_GBps_%zuM %.3f\n", kind, sizes[s], bytes * (double)reps / best_d / 1e9);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: driver_bench KERNELS.ptx [MAX_MIB]\n");
        return 2;
    }
    size_t max_mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
    char *ptx = read_file(argv[1]);
    CUdevice device;
    CUcontext ctx;
    CUmodule module;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&device, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, device));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuModuleLoadData(&module, ptx));
    CHECK(cuModuleGetFunction(&saxpy, module, "saxpy"));
    CHECK(cuMemAlloc(&one, 4096));
    CHECK(cuMemsetD8(one, 0, 4096));
    launches();

    size_t bytes = max_mib << 20;
    CUdeviceptr dev;
    CHECK(cuMemAlloc(&dev, bytes));
    char *pageable = malloc(bytes);
    if (!pageable)
        return 2;
    memset(pageable, 7, bytes); /* (touched: no first-touch faults in the timings) */
    copies("pageable", pageable, dev, max_mib);
    free(pageable);
    size_t pinned_mib = max_mib < 64 ? max_mib : 64; /* (a VM's page-locked memory lives in its shared window) */
    void *pinned;
    CHECK(cuMemAllocHost(&pinned, pinned_mib << 20));
    memset(pinned, 7, pinned_mib << 20);
    copies("pinned", pinned, dev, pinned_mib);
    CHECK(cuMemFreeHost(pinned));
    CHECK(cuMemFree(dev));
    CHECK(cuMemFree(one));
    CHECK(cuModuleUnload(module));
    CHECK(cuDevicePrimaryCtxRelease(device));
    printf("DONE\n");
    return 0;
}

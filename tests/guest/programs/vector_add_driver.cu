// vectorAdd in the style of NVIDIA's vectorAddDrv sample, built by nvcc and linked with -lcuda,
// run on kvmgpu's libcuda.so.1 by tests/guest/test_libcuda.py. The kernel is loaded as PTX
// (cuModuleLoadData); a fatbin registered by the runtime is the next milestone's.
#include <cuda.h>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(call)                                                                    \
    do {                                                                               \
        CUresult rc_ = (call);                                                         \
        if (rc_ != CUDA_SUCCESS) {                                                     \
            const char *name_ = nullptr;                                               \
            cuGetErrorName(rc_, &name_);                                               \
            std::printf("FAIL %s: %s\n", #call, name_ ? name_ : "?");                  \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: vector_add_driver KERNELS.ptx\n");
        return 2;
    }
    FILE *f = std::fopen(argv[1], "rb");
    if (!f)
        return 2;
    std::vector<char> ptx;
    for (int ch; (ch = std::fgetc(f)) != EOF;)
        ptx.push_back(static_cast<char>(ch));
    ptx.push_back('\0');
    std::fclose(f);

    const int n = 50000;
    std::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; i++) {
        a[i] = std::rand() / static_cast<float>(RAND_MAX);
        b[i] = std::rand() / static_cast<float>(RAND_MAX);
    }
    CUdevice dev;
    CUcontext ctx;
    CUmodule module;
    CUfunction kernel;
    CUdeviceptr da, db, dc;
    size_t bytes = n * sizeof(float);
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, nullptr, 0, dev));
    CHECK(cuModuleLoadData(&module, ptx.data()));
    CHECK(cuModuleGetFunction(&kernel, module, "vector_add"));
    CHECK(cuMemAlloc(&da, bytes));
    CHECK(cuMemAlloc(&db, bytes));
    CHECK(cuMemAlloc(&dc, bytes));
    CHECK(cuMemcpyHtoD(da, a.data(), bytes));
    CHECK(cuMemcpyHtoD(db, b.data(), bytes));
    int count = n;
    void *args[] = {&da, &db, &dc, &count};
    int threads = 256, blocks = (n + threads - 1) / threads;
    CHECK(cuLaunchKernel(kernel, blocks, 1, 1, threads, 1, 1, 0, nullptr, args, nullptr));
    CHECK(cuCtxSynchronize());
    CHECK(cuMemcpyDtoH(c.data(), dc, bytes));
    int wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += c[i] != a[i] + b[i];
    CHECK(cuMemFree(da));
    CHECK(cuMemFree(db));
    CHECK(cuMemFree(dc));
    CHECK(cuModuleUnload(module));
    CHECK(cuCtxDestroy(ctx));
    std::printf("%s vectorAdd (%d wrong)\nDONE\n", wrong ? "FAIL" : "OK", wrong);
    return wrong != 0;
}

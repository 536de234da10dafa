/* An unmodified CUDA driver-API program (built against CUDA's own cuda.h, linked with -lcuda),
 * run on kvmgpu's native libcuda.so.1 by tests/guest/test_libcuda.py.
 *
 *   driver_api main KERNELS.ptx   device queries, contexts, copies, a launch, events
 *   driver_api quota              cuMemAlloc past the quota
 *   driver_api bad                bad pointers and handles
 *   driver_api procaddr           cuGetProcAddress
 *   driver_api bad2d KERNELS.ptx  hostile inputs to the 2D copies, memsets, attributes, pools,
 *                                 tensor maps and launch attributes (the guest's and the host's checks)
 *   driver_api lost               set up, say READY, wait for a line on stdin, then call again
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *name(CUresult rc)
{
    const char *s = NULL;
    return cuGetErrorName(rc, &s) == CUDA_SUCCESS ? s : "(unknown)";
}

#define CHECK(call)                                                                     \
    do {                                                                                \
        CUresult rc_ = (call);                                                          \
        if (rc_ != CUDA_SUCCESS) {                                                      \
            printf("FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #call, name(rc_));        \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)
#define EXPECT(call, want)                                                              \
    do {                                                                                \
        CUresult rc_ = (call);                                                          \
        printf("%s %s = %s\n", rc_ == (want) ? "OK" : "FAIL", #call, name(rc_));        \
        if (rc_ != (want))                                                              \
            exit(1);                                                                    \
    } while (0)

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc(1, (size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        exit(2);
    fclose(f);
    return buf;
}

static CUcontext start(void)
{
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    return ctx;
}

static int run_main(const char *ptx_path)
{
    int version = 0, count = 0, major = 0, minor = 0, attr = 0;
    char dev_name[128];
    size_t total = 0, free_bytes = 0;
    CUdevice dev;
    CUuuid uuid;

    EXPECT(cuCtxSynchronize(), CUDA_ERROR_NOT_INITIALIZED);
    CHECK(cuInit(0));
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGetCount(&count));
    CHECK(cuDeviceGet(&dev, 0));
    EXPECT(cuDeviceGet(&dev, 1), CUDA_ERROR_INVALID_DEVICE);
    CHECK(cuDeviceGetName(dev_name, sizeof dev_name, dev));
    CHECK(cuDeviceComputeCapability(&major, &minor, dev));
    CHECK(cuDeviceGetAttribute(&attr, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, dev));
    CHECK(cuDeviceTotalMem(&total, dev));
    CHECK(cuDeviceGetUuid(&uuid, dev));
    printf("DEVICE count=%d name=%s cc=%d.%d driver=%d total=%zu max_threads=%d uuid0=%02x\n", count, dev_name,
           major, minor, version, total, attr, (unsigned char)uuid.bytes[0]);

    /* contexts: a created one, pushed and popped, then the primary one */
    CUcontext ctx, primary, cur;
    EXPECT(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
    CHECK(cuCtxCreate(&ctx, NULL, 0, dev));
    CHECK(cuCtxGetCurrent(&cur));
    printf("%s created context is current\n", cur == ctx ? "OK" : "FAIL");
    CHECK(cuCtxSynchronize());
    CHECK(cuDevicePrimaryCtxRetain(&primary, dev));
    CHECK(cuCtxPushCurrent(primary));
    CHECK(cuCtxPopCurrent(&cur));
    printf("%s pop gives the pushed context\n", cur == primary ? "OK" : "FAIL");
    CHECK(cuCtxDestroy(ctx));
    CHECK(cuCtxGetCurrent(&cur));
    printf("%s destroyed context is not current\n", cur == NULL ? "OK" : "FAIL");
    unsigned flags = 0;
    int active = 0;
    CHECK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
    printf("%s primary context active\n", active ? "OK" : "FAIL");
    CHECK(cuCtxSetCurrent(primary));
    CUdevice ctx_dev = -1;
    CHECK(cuCtxGetDevice(&ctx_dev));
    CHECK(cuMemGetInfo(&free_bytes, &total));
    printf("MEMORY free=%zu total=%zu\n", free_bytes, total);

    /* memory and a launch */
    enum { N = 1000 };
    static float a[N], b[N], c[N];
    for (int i = 0; i < N; i++) {
        a[i] = (float)i;
        b[i] = 2.0f * (float)i;
    }
    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, sizeof a));
    CHECK(cuMemAlloc(&db, sizeof b));
    CHECK(cuMemAlloc(&dc, sizeof c));
    CHECK(cuMemcpyHtoD(da, a, sizeof a));
    CHECK(cuMemcpyHtoD(db, b, sizeof b));
    CHECK(cuMemsetD32(dc, 0, N));

    char *ptx = read_file(ptx_path);
    CUmodule module;
    CUfunction vector_add, saxpy;
    CHECK(cuModuleLoadData(&module, ptx));
    CHECK(cuModuleGetFunction(&vector_add, module, "vector_add"));
    CHECK(cuModuleGetFunction(&saxpy, module, "saxpy"));
    EXPECT(cuModuleGetFunction(&saxpy, module, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
    /* from the file, as Triton's launchers load their kernels */
    CUmodule from_file = NULL;
    CUfunction in_file = NULL;
    CHECK(cuModuleLoad(&from_file, ptx_path));
    CHECK(cuModuleGetFunction(&in_file, from_file, "saxpy"));
    CUmodule none = NULL;
    CUresult missing = cuModuleLoad(&none, "/nonexistent/kernels.ptx");
    printf("%s a module from a file; a missing file: %s\n", in_file && missing == CUDA_ERROR_FILE_NOT_FOUND ? "OK" : "FAIL",
           name(missing));
    CHECK(cuModuleUnload(from_file));

    /* the same code as a library: its kernel knows its library until the library is unloaded */
    CUlibrary library, of = NULL;
    CUkernel kernel;
    CHECK(cuLibraryLoadData(&library, ptx, NULL, NULL, 0, NULL, NULL, 0));
    CHECK(cuLibraryGetKernel(&kernel, library, "vector_add"));
    CHECK(cuKernelGetLibrary(&of, kernel));
    printf("%s a kernel's library\n", of == library ? "OK" : "FAIL");
    CHECK(cuLibraryUnload(library));
    EXPECT(cuKernelGetLibrary(&of, kernel), CUDA_ERROR_INVALID_HANDLE);

    CUstream stream;
    CUevent start_ev, stop_ev;
    CHECK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    CHECK(cuEventCreate(&start_ev, CU_EVENT_DEFAULT));
    CHECK(cuEventCreate(&stop_ev, CU_EVENT_DEFAULT));
    int n = N;
    void *args[] = {&da, &db, &dc, &n};
    CHECK(cuEventRecord(start_ev, stream));
    CHECK(cuLaunchKernel(vector_add, 1, 1, 1, N, 1, 1, 0, stream, args, NULL));
    CHECK(cuEventRecord(stop_ev, stream));
    CHECK(cuStreamSynchronize(stream));
    CHECK(cuEventSynchronize(stop_ev));
    EXPECT(cuEventQuery(stop_ev), CUDA_SUCCESS);
    EXPECT(cuStreamQuery(stream), CUDA_SUCCESS);
    float ms = -1;
    CHECK(cuEventElapsedTime(&ms, start_ev, stop_ev));
    printf("%s elapsed time %s\n", ms >= 0 ? "OK" : "FAIL", ms >= 0 ? "not negative" : "negative");
    CHECK(cuMemcpyDtoH(c, dc, sizeof c));
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += c[i] != 3.0f * (float)i;
    printf("%s vector_add (%d wrong)\n", bad ? "FAIL" : "OK", bad);

    /* saxpy through `extra`: one buffer laid out as the kernel's parameters */
    struct {
        float a;
        int pad;
        CUdeviceptr x, y;
        int n;
    } packed = {0.5f, 0, da, dc, N};
    size_t packed_size = sizeof packed;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &packed_size,
                     CU_LAUNCH_PARAM_END};
    CHECK(cuLaunchKernel(saxpy, 1, 1, 1, N, 1, 1, 0, NULL, NULL, extra));
    CHECK(cuCtxSynchronize());
    CHECK(cuMemcpyDtoHAsync(c, dc, sizeof c, stream));
    CHECK(cuStreamSynchronize(stream));
    bad = 0;
    for (int i = 0; i < N; i++)
        bad += c[i] != 3.5f * (float)i;
    printf("%s saxpy through extra (%d wrong)\n", bad ? "FAIL" : "OK", bad);

    /* device to device, memset, async forms */
    CHECK(cuMemcpyDtoD(db, da, sizeof a));
    CHECK(cuMemsetD8Async(dc, 0, sizeof c, stream));
    CHECK(cuMemcpyDtoDAsync(dc, db, 16, stream));
    CHECK(cuMemcpyHtoDAsync(da, b, sizeof b, stream));
    CHECK(cuStreamSynchronize(stream));
    CHECK(cuMemcpyDtoH(c, dc, sizeof c));
    bad = 0;
    for (int i = 0; i < N; i++)
        bad += c[i] != (i < 4 ? (float)i : 0.0f);
    printf("%s dtod and memset (%d wrong)\n", bad ? "FAIL" : "OK", bad);

    /* a copy larger than the window goes in pieces */
    size_t big = 3u << 20;
    unsigned char *src = malloc(big), *dst = malloc(big);
    for (size_t i = 0; i < big; i++)
        src[i] = (unsigned char)(i * 7 + 3);
    CUdeviceptr dbig;
    CHECK(cuMemAlloc(&dbig, big));
    CHECK(cuMemcpyHtoD(dbig, src, big));
    CHECK(cuMemcpyDtoH(dst, dbig, big));
    printf("%s big copy round trip\n", memcmp(src, dst, big) ? "FAIL" : "OK");

    CUdeviceptr global;
    size_t global_size = 0;
    EXPECT(cuModuleGetGlobal(&global, &global_size, module, "no_such_global"), CUDA_ERROR_NOT_FOUND);

    CHECK(cuEventDestroy(start_ev));
    CHECK(cuEventDestroy(stop_ev));
    CHECK(cuStreamDestroy(stream));
    CHECK(cuModuleUnload(module));
    CHECK(cuMemFree(da));
    CHECK(cuMemFree(db));
    CHECK(cuMemFree(dc));
    CHECK(cuMemFree(dbig));
    CHECK(cuMemGetInfo(&free_bytes, &total));
    printf("%s everything freed\n", free_bytes == total ? "OK" : "FAIL");
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(ptx);
    free(src);
    free(dst);
    printf("DONE\n");
    return 0;
}

static int run_quota(void)
{
    size_t free_bytes, total;
    CUdeviceptr p;
    start();
    CHECK(cuMemGetInfo(&free_bytes, &total));
    EXPECT(cuMemAlloc(&p, total + 1), CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemAlloc(&p, total / 2));
    CUdeviceptr q;
    EXPECT(cuMemAlloc(&q, total / 2 + 4096), CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemFree(p));
    printf("DONE\n");
    return 0;
}

static int run_bad(void)
{
    CUdeviceptr p;
    char host[64] = {0};
    start();
    CHECK(cuMemAlloc(&p, 64));
    EXPECT(cuMemcpyHtoD(p + 4096, host, 64), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuMemcpyHtoD(p + 32, host, 64), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuMemcpyDtoH(host, 0xdead0000, 16), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuMemFree(p + 8), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuMemAlloc(NULL, 64), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuLaunchKernel((CUfunction)0x1234, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_INVALID_HANDLE);
    EXPECT(cuStreamSynchronize((CUstream)0x777), CUDA_ERROR_INVALID_HANDLE);
    unsigned int stream_flags = 99;
    CUstream gone;
    EXPECT(cuStreamGetFlags((CUstream)0x777, &stream_flags), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuStreamCreate(&gone, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamDestroy(gone));
    EXPECT(cuStreamGetFlags(gone, &stream_flags), CUDA_ERROR_INVALID_HANDLE);
    EXPECT(cuStreamGetFlags(NULL, NULL), CUDA_ERROR_INVALID_VALUE);
    printf("%s stream flags untouched by the refused calls\n", stream_flags == 99 ? "OK" : "FAIL");
    EXPECT(cuModuleLoadData(NULL, "x"), CUDA_ERROR_INVALID_VALUE);
    CUmodule m;
    EXPECT(cuModuleLoadData(&m, "this is not PTX"), CUDA_ERROR_INVALID_PTX);
    const char *s;
    EXPECT(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &s), CUDA_SUCCESS);
    printf("TEXT %s\n", s);
    EXPECT(cuGetErrorName((CUresult)12345, &s), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemFree(p));
    CHECK(cuCtxSynchronize());
    printf("DONE\n");
    return 0;
}

typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);

static int run_procaddr(void)
{
    void *fn = NULL;
    CUdriverProcAddressQueryResult status = -1;
    start();
    CHECK(cuGetProcAddress("cuMemAlloc", &fn, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &status));
    printf("%s cuMemAlloc resolves to cuMemAlloc_v2\n", fn == dlsym(RTLD_DEFAULT, "cuMemAlloc_v2") ? "OK" : "FAIL");
    CUdeviceptr p;
    CHECK(((alloc_fn)fn)(&p, 256));
    CHECK(cuMemFree(p));
    CHECK(cuGetProcAddress("cuMemcpyHtoD", &fn, CUDA_VERSION, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
                           &status));
    printf("%s per-thread cuMemcpyHtoD is the _ptds one\n", fn == dlsym(RTLD_DEFAULT, "cuMemcpyHtoD_v2_ptds") ? "OK" : "FAIL");
    CHECK(cuGetProcAddress("cuMemcpyHtoD", &fn, CUDA_VERSION, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status));
    printf("%s legacy cuMemcpyHtoD is the _v2 one\n", fn == dlsym(RTLD_DEFAULT, "cuMemcpyHtoD_v2") ? "OK" : "FAIL");
    CHECK(cuGetProcAddress("cuCtxCreate", &fn, 11000, 0, &status));
    printf("%s cuCtxCreate for CUDA 11.0 is _v2\n", fn == dlsym(RTLD_DEFAULT, "cuCtxCreate_v2") ? "OK" : "FAIL");
    EXPECT(cuGetProcAddress("cuMemAlloc", &fn, 3000, 0, &status), CUDA_ERROR_NOT_FOUND);
    printf("%s too old a version: VERSION_NOT_SUFFICIENT\n",
           status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT && fn == NULL ? "OK" : "FAIL");
    EXPECT(cuGetProcAddress("cuNoSuchThing", &fn, CUDA_VERSION, 0, &status), CUDA_ERROR_NOT_FOUND);
    EXPECT(cuGetProcAddress("cuNoSuchThing", &fn, CUDA_VERSION, 0, &status), CUDA_ERROR_NOT_FOUND);
    printf("%s unknown: SYMBOL_NOT_FOUND\n", status == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND && !fn ? "OK" : "FAIL");
    /* a driver function the library does not forward: a stub, NOT_SUPPORTED when called */
    CHECK(cuGetProcAddress("cuMemAllocManaged", &fn, CUDA_VERSION, 0, &status));
    void *again = NULL;
    CHECK(cuGetProcAddress("cuMemAllocManaged", &again, CUDA_VERSION, 0, &status));
    typedef CUresult (*managed_fn)(CUdeviceptr *, size_t, unsigned int);
    CUresult first = ((managed_fn)fn)(&p, 256, 1), second = ((managed_fn)fn)(&p, 256, 1);
    printf("%s not forwarded: a stub, NOT_SUPPORTED\n",
           fn && fn == again && first == CUDA_ERROR_NOT_SUPPORTED && second == first ? "OK" : "FAIL");
    /* looked up with dlsym, as cuBLASLt does: every driver symbol is there, the unforwarded ones
     * stubs (a weak definition the library's own replaces) */
    typedef CUresult (*wait_fn)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
    wait_fn wait = (wait_fn)dlsym(RTLD_DEFAULT, "cuStreamWaitValue32");
    first = wait ? wait(NULL, 0, 0, 0) : CUDA_SUCCESS;
    second = wait ? wait(NULL, 0, 0, 0) : CUDA_SUCCESS;
    printf("%s dlsym of an unforwarded symbol: a stub, NOT_SUPPORTED\n",
           wait && first == CUDA_ERROR_NOT_SUPPORTED && second == first ? "OK" : "FAIL");
    printf("%s dlsym of a forwarded symbol: the library's own\n",
           dlsym(RTLD_DEFAULT, "cuMemAlloc_v2") == (void *)cuMemAlloc ? "OK" : "FAIL");
    /* names of a newer CUDA than the library's list: NOT_FOUND, one line for all */
    EXPECT(cuGetProcAddress("cuFromTheFuture", &fn, 99000, 0, &status), CUDA_ERROR_NOT_FOUND);
    EXPECT(cuGetProcAddress("cuAlsoFromTheFuture", &fn, 99000, 0, &status), CUDA_ERROR_NOT_FOUND);
    /* the TOOLS_TLS export table: the calling thread's current context, read (cuBLASLt 13 does,
     * before a matmul's heuristics) and set, two slots as the driver's */
    static const CUuuid tools_tls = {{(char)0x42, (char)0xd8, 0x5a, (char)0x81, 0x23, (char)0xf6, (char)0xcb, 0x47,
                                      (char)0x82, (char)0x98, (char)0xf6, (char)0xe7, (char)0x8a, 0x3a, (char)0xec,
                                      (char)0xdc}};
    const void **tls = NULL;
    CHECK(cuGetExportTable((const void **)&tls, &tools_tls));
    typedef CUresult (*tls_set_fn)(CUcontext);
    typedef CUresult (*tls_get_fn)(CUcontext *);
    CUcontext current = NULL, got = NULL, none = (CUcontext)1;
    CHECK(cuCtxGetCurrent(&current));
    CHECK(((tls_get_fn)tls[2])(&got));
    CHECK(((tls_set_fn)tls[1])(NULL));
    CHECK(((tls_get_fn)tls[2])(&none));
    CHECK(((tls_set_fn)tls[1])(current));
    CHECK(cuCtxGetCurrent(&got));
    printf("%s TOOLS_TLS: the current context, read and set\n",
           (size_t)tls[0] == 3 * sizeof(void *) && current && got == current && none == NULL ? "OK" : "FAIL");
    printf("DONE\n");
    return 0;
}

static int run_lost(void)
{
    CUdeviceptr p;
    char line[16], host[16] = {0};
    start();
    CHECK(cuMemAlloc(&p, 4096));
    printf("READY\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 2;
    printf("sync %s\n", name(cuCtxSynchronize()));
    printf("copy %s\n", name(cuMemcpyHtoD(p, host, sizeof host)));
    printf("alloc %s\n", name(cuMemAlloc(&p, 16)));
    printf("DONE\n");
    return 0;
}

/* Bulk copies of `mib` MiB and odd sizes: HtoD then DtoH (sync and async), bytes compared. */
static int run_copies(long mib)
{
    size_t sizes[] = {(size_t)mib << 20, ((size_t)mib << 20) + 12345, 3 << 20, 1, 4095, 0};
    start();
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *a = malloc(n + 1), *b = malloc(n + 1);
        CUdeviceptr d;
        if (!a || !b)
            return 2;
        for (size_t k = 0; k < n; k++)
            a[k] = (unsigned char)(k * 131 + k / 4093 + i);
        memset(b, 0xEE, n + 1);
        CHECK(cuMemAlloc(&d, n ? n : 1));
        CHECK(cuMemcpyHtoD(d, a, n));
        CHECK(cuMemcpyDtoH(b, d, n));
        int same = !memcmp(a, b, n) && b[n] == 0xEE;
        memset(b, 0, n);
        CHECK(cuMemcpyHtoDAsync(d, a, n, NULL));
        CHECK(cuMemcpyDtoHAsync(b, d, n, NULL));
        CHECK(cuCtxSynchronize());
        same = same && !memcmp(a, b, n);
        printf("%s copies of %zu bytes\n", same ? "OK" : "FAIL", n);
        CHECK(cuMemFree(d));
        free(a);
        free(b);
    }
    /* page-locked buffers: copies from and to them, and one too big for the window */
    size_t pn = 1 << 20;
    unsigned char *pin_in, *pin_out, *huge;
    CUdeviceptr pd;
    CHECK(cuMemAllocHost((void **)&pin_in, pn));
    CHECK(cuMemHostAlloc((void **)&pin_out, pn, 0));
    CHECK(cuMemAllocHost((void **)&huge, (size_t)mib << 20));
    CHECK(cuMemAlloc(&pd, (size_t)mib << 20));
    for (size_t k = 0; k < pn; k++)
        pin_in[k] = (unsigned char)(k * 7 + 3);
    memset(huge, 0x5A, (size_t)mib << 20);
    CHECK(cuMemcpyHtoD(pd, pin_in, pn));
    CHECK(cuMemcpyDtoH(pin_out, pd, pn));
    int pin_same = !memcmp(pin_in, pin_out, pn);
    CHECK(cuMemcpyHtoDAsync(pd + 4096, pin_in + 100, pn - 100, NULL)); /* inside a block, off its start */
    CHECK(cuMemcpyDtoHAsync(pin_out, pd + 4096, pn - 100, NULL));
    CHECK(cuCtxSynchronize());
    pin_same = pin_same && !memcmp(pin_in + 100, pin_out, pn - 100);
    CHECK(cuMemcpyHtoD(pd, huge, (size_t)mib << 20));
    memset(huge, 0, (size_t)mib << 20);
    CHECK(cuMemcpyDtoH(huge, pd, (size_t)mib << 20));
    pin_same = pin_same && huge[0] == 0x5A && huge[((size_t)mib << 20) - 1] == 0x5A;
    printf("%s page-locked copies\n", pin_same ? "OK" : "FAIL");
    CHECK(cuMemFreeHost(pin_in));
    CHECK(cuMemFreeHost(pin_out));
    CHECK(cuMemFreeHost(huge));
    printf("free twice: %s\n", name(cuMemFreeHost(pin_in)));
    CHECK(cuMemFree(pd));
    /* a copy that fails half way (past the allocation's end) is an error, and the session goes on */
    CUdeviceptr small;
    static unsigned char big[8 << 20];
    CHECK(cuMemAlloc(&small, 1 << 20));
    printf("DtoH past the end: %s\n", name(cuMemcpyDtoH(big, small, sizeof big)));
    printf("HtoD past the end: %s\n", name(cuMemcpyHtoD(small, big, sizeof big)));
    CHECK(cuMemcpyDtoH(big, small, 1 << 20));
    printf("DONE\n");
    return 0;
}

static int run_bad2d(const char *ptx_path)
{
    CUdeviceptr p, q, base;
    size_t size;
    char host[256] = {0};
    start();
    CHECK(cuMemAlloc(&p, 4096));
    CHECK(cuMemAlloc(&q, 4096));
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_HOST, c.srcHost = NULL, c.srcPitch = 16;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE, c.dstDevice = p, c.dstPitch = 16;
    c.WidthInBytes = 16, c.Height = 2;
    EXPECT(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE); /* a NULL host pointer */
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE, c.srcDevice = q, c.dstPitch = 4096;
    EXPECT(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE); /* the second row past p's allocation: the host says */
    c.dstPitch = (size_t)1 << 62, c.Height = 5;
    EXPECT(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE); /* pitch * height wraps */
    c.dstPitch = 16, c.Height = 2, c.srcY = (size_t)1 << 62, c.srcPitch = 16;
    EXPECT(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE); /* srcY * pitch wraps */
    c.srcY = 0, c.WidthInBytes = 32;
    EXPECT(cuMemcpy2D(&c), CUDA_ERROR_INVALID_VALUE); /* rows wider than the pitch */
    c.srcMemoryType = CU_MEMORYTYPE_ARRAY;
    EXPECT(cuMemcpy2D(&c), CUDA_ERROR_NOT_SUPPORTED); /* no CUDA arrays for a VM */
    EXPECT(cuMemsetD2D8(p, 8, 1, 16, 2), CUDA_ERROR_INVALID_VALUE); /* width over the pitch */
    EXPECT(cuMemsetD16(p + 4090, 0, 4), CUDA_ERROR_INVALID_VALUE);   /* past the end */
    EXPECT(cuMemGetAddressRange(&base, &size, p + 100), CUDA_SUCCESS);
    printf("%s address range of p + 100\n", base == p && size == 4096 ? "OK" : "FAIL");
    EXPECT(cuMemGetAddressRange(&base, &size, (CUdeviceptr)(uintptr_t)host), CUDA_ERROR_NOT_FOUND);
    EXPECT(cuMemFreeAsync(p + 8, NULL), CUDA_ERROR_INVALID_VALUE);
    CUmemoryPool pool;
    cuuint64_t v = 1;
    CHECK(cuDeviceGetDefaultMemPool(&pool, 0));
    EXPECT(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH, &v), CUDA_ERROR_INVALID_VALUE); /* only 0 */
    EXPECT(cuCtxSetLimit((CUlimit)99, 1), CUDA_ERROR_INVALID_VALUE);
    char *ptx = read_file(ptx_path);
    CUmodule m;
    CUfunction f;
    int value;
    CHECK(cuModuleLoadData(&m, ptx));
    CHECK(cuModuleGetFunction(&f, m, "vector_add"));
    EXPECT(cuFuncGetAttribute(&value, (CUfunction_attribute)99, f), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuFuncGetAttribute(&value, CU_FUNC_ATTRIBUTE_NUM_REGS, (CUfunction)0x1234), CUDA_ERROR_INVALID_HANDLE);
    EXPECT(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1 << 30), CUDA_ERROR_INVALID_VALUE);
    CUlaunchAttribute cooperative = {.id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE, .value.cooperative = 1};
    CUlaunchConfig config = {.gridDimX = 1, .gridDimY = 1, .gridDimZ = 1, .blockDimX = 1, .blockDimY = 1,
                             .blockDimZ = 1, .attrs = &cooperative, .numAttrs = 1};
    EXPECT(cuLaunchKernelEx(&config, f, NULL, NULL), CUDA_ERROR_NOT_SUPPORTED);
    CUtensorMap map;
    cuuint64_t dims[2] = {16, 4096}, strides[1] = {16};
    cuuint32_t box[2] = {16, 4}, one[2] = {1, 1};
    EXPECT(cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, (void *)(uintptr_t)p, dims, strides, box,
                                  one, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                                  CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
           CUDA_ERROR_INVALID_VALUE); /* 64 KiB of tensor in a 4 KiB allocation */
    EXPECT(cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 0, (void *)(uintptr_t)p, dims, strides, box,
                                  one, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                                  CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
           CUDA_ERROR_INVALID_VALUE); /* rank 0 */
    EXPECT(cuTensorMapReplaceAddress(&map, (void *)(uintptr_t)q), CUDA_ERROR_NOT_SUPPORTED); /* never encoded */
    /* many functions (the library's index of them grows): each still found by its handle */
    static CUfunction fs[300];
    for (int i = 0; i < 300; i++) {
        CHECK(cuModuleGetFunction(&fs[i], m, i % 2 ? "vector_add" : "saxpy"));
        CHECK(cuFuncSetAttribute(fs[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1000 + i)); /* each its own */
    }
    int wrong = 0;
    for (int i = 0; i < 300; i++) {
        CHECK(cuFuncGetAttribute(&value, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, fs[i]));
        wrong += value != 1000 + i;
    }
    printf("%s 300 functions' attributes kept apart (%d wrong)\n", wrong ? "FAIL" : "OK", wrong);
    const char *first, *last;
    CHECK(cuFuncGetName(&first, fs[0]));
    CHECK(cuFuncGetName(&last, fs[299]));
    printf("%s 300 functions found by handle (%s, %s)\n", !strcmp(first, "saxpy") && !strcmp(last, "vector_add") ?
           "OK" : "FAIL", first, last);
    EXPECT(cuLaunchKernel(fs[150], 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_INVALID_VALUE); /* no params */
    CHECK(cuModuleUnload(m));
    free(ptx);
    CHECK(cuMemFree(p));
    CHECK(cuMemFree(q));
    CHECK(cuCtxSynchronize());
    printf("DONE\n");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "main"))
        return run_main(argv[2]);
    if (argc >= 2 && !strcmp(argv[1], "quota"))
        return run_quota();
    if (argc >= 2 && !strcmp(argv[1], "bad"))
        return run_bad();
    if (argc >= 3 && !strcmp(argv[1], "bad2d"))
        return run_bad2d(argv[2]);
    if (argc >= 2 && !strcmp(argv[1], "procaddr"))
        return run_procaddr();
    if (argc >= 2 && !strcmp(argv[1], "lost"))
        return run_lost();
    if (argc >= 3 && !strcmp(argv[1], "copies"))
        return run_copies(atol(argv[2]));
    fprintf(stderr, "usage: driver_api main KERNELS.ptx | quota | bad | bad2d KERNELS.ptx | procaddr | lost | copies MIB\n");
    return 2;
}

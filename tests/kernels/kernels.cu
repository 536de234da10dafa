// Test kernels for kvmgpu. Each has a Python twin in kvmgpu/backend/simkernels.py, registered
// under the same entry-point name, so the sim development backend can run the same PTX.
// Build: nvcc -ptx -arch=compute_80 kernels.cu -o kernels.ptx

__device__ float scale = 1.0f;  // read and written through cuModuleGetGlobal

extern "C" __global__ void vector_add(const float* a, const float* b, float* c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" __global__ void saxpy(float a, const float* x, float* y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

// Busy-waits for `nanoseconds` of GPU time: the compute-share tests use it.
extern "C" __global__ void spin(long long nanoseconds)
{
    unsigned long long t0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    unsigned long long now = t0;
    while ((long long)(now - t0) < nanoseconds) {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    }
}

// Writes p[index]: with an index outside the allocation it faults (fault-isolation tests).
extern "C" __global__ void write_oob(float* p, long long index)
{
    p[index] = 42.0f;
}

// 3-point average; the ends copy through. Used by the end-to-end benchmark.
extern "C" __global__ void stencil1d(const float* in, float* out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    if (i == 0 || i == n - 1) out[i] = in[i];
    else out[i] = (in[i - 1] + in[i] + in[i + 1]) * (1.0f / 3.0f);
}

// Multiplies x by the module's `scale` global (cuModuleGetGlobal tests).
extern "C" __global__ void scale_by_global(float* x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * scale;
}

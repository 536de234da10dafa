// matrixMul in the style of NVIDIA's cuda-samples (a tiled shared-memory kernel templated on the
// block size, page-locked host buffers, events around repeated launches), built by nvcc and run
// unmodified on kvmgpu's libcuda.so.1 by tests/guest/test_cudart.py (the sim backend has a twin
// of MatrixMulCUDA<16>) and by bench/gpu/libcuda_gpu.sh. Prints OK/FAIL lines, then DONE.
#include <cuda_runtime.h>
#include <cmath>
#include <cstdio>

template <int BLOCK_SIZE>
__global__ void MatrixMulCUDA(float *C, float *A, float *B, int wA, int wB)
{
    int bx = blockIdx.x, by = blockIdx.y, tx = threadIdx.x, ty = threadIdx.y;
    int aBegin = wA * BLOCK_SIZE * by, aEnd = aBegin + wA - 1, aStep = BLOCK_SIZE;
    int bBegin = BLOCK_SIZE * bx, bStep = BLOCK_SIZE * wB;
    float sum = 0;
    for (int a = aBegin, b = bBegin; a <= aEnd; a += aStep, b += bStep) {
        __shared__ float As[BLOCK_SIZE][BLOCK_SIZE];
        __shared__ float Bs[BLOCK_SIZE][BLOCK_SIZE];
        As[ty][tx] = A[a + wA * ty + tx];
        Bs[ty][tx] = B[b + wB * ty + tx];
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BLOCK_SIZE; ++k)
            sum += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    int c = wB * BLOCK_SIZE * by + BLOCK_SIZE * bx;
    C[c + wB * ty + tx] = sum;
}

#define CHECK(call)                                                                   \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess) {                                                      \
            std::printf("FAIL %s: %s\n", #call, cudaGetErrorName(e_));                \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

int main()
{
    const int block = 16;
    const dim3 dimsA(3 * block, 4 * block), dimsB(5 * block, 3 * block); // (width, height)
    const size_t sizeA = dimsA.x * dimsA.y, sizeB = dimsB.x * dimsB.y, sizeC = dimsB.x * dimsA.y;
    float *hA, *hB, *hC;
    CHECK(cudaMallocHost(&hA, sizeA * sizeof(float)));
    CHECK(cudaMallocHost(&hB, sizeB * sizeof(float)));
    CHECK(cudaMallocHost(&hC, sizeC * sizeof(float)));
    for (size_t i = 0; i < sizeA; i++)
        hA[i] = 1.0f + (i % 7) * 0.25f;
    for (size_t i = 0; i < sizeB; i++)
        hB[i] = 0.01f * (i % 13);
    float *dA, *dB, *dC;
    CHECK(cudaMalloc(&dA, sizeA * sizeof(float)));
    CHECK(cudaMalloc(&dB, sizeB * sizeof(float)));
    CHECK(cudaMalloc(&dC, sizeC * sizeof(float)));
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CHECK(cudaMemcpyAsync(dA, hA, sizeA * sizeof(float), cudaMemcpyHostToDevice, stream));
    CHECK(cudaMemcpyAsync(dB, hB, sizeB * sizeof(float), cudaMemcpyHostToDevice, stream));
    dim3 threads(block, block), grid(dimsB.x / threads.x, dimsA.y / threads.y);
    MatrixMulCUDA<block><<<grid, threads, 0, stream>>>(dC, dA, dB, dimsA.x, dimsB.x); // (warm-up)
    CHECK(cudaStreamSynchronize(stream));
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    CHECK(cudaEventRecord(start, stream));
    const int iterations = 10;
    for (int j = 0; j < iterations; j++)
        MatrixMulCUDA<block><<<grid, threads, 0, stream>>>(dC, dA, dB, dimsA.x, dimsB.x);
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    CHECK(cudaMemcpyAsync(hC, dC, sizeC * sizeof(float), cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    int wrong = 0;
    for (unsigned row = 0; row < dimsA.y; row++) {
        for (unsigned col = 0; col < dimsB.x; col++) {
            double ref = 0;
            for (unsigned k = 0; k < dimsA.x; k++)
                ref += (double)hA[row * dimsA.x + k] * hB[k * dimsB.x + col];
            float got = hC[row * dimsB.x + col];
            wrong += std::fabs(got - ref) > 1e-5 * std::fabs(ref) + 1e-6;
        }
    }
    std::printf("%s matrixMul %ux%u (%d wrong)\n", wrong ? "FAIL" : "OK", dimsB.x, dimsA.y, wrong);
    std::printf("%s matrixMul time measured\n", ms >= 0 ? "OK" : "FAIL");
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
    CHECK(cudaStreamDestroy(stream));
    CHECK(cudaFree(dA));
    CHECK(cudaFree(dB));
    CHECK(cudaFree(dC));
    CHECK(cudaFreeHost(hA));
    CHECK(cudaFreeHost(hB));
    CHECK(cudaFreeHost(hC));
    std::printf("DONE\n");
    return 0;
}

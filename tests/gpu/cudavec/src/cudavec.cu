#include "cudavec.h"
#include <cuda_runtime.h>

__global__ void scale_kernel(float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= 2.0f;
}

extern "C" int cudavec_scale(float *h, int n) {
    float *d = nullptr;
    cudaError_t e = cudaMalloc(&d, n * sizeof(float));
    if (e != cudaSuccess) return (int)e;
    cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
    scale_kernel<<<(n + 255) / 256, 256>>>(d, n);
    e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(d);
    return (int)e;
}

extern "C" const char *cudavec_error(int code) { return cudaGetErrorString((cudaError_t)code); }

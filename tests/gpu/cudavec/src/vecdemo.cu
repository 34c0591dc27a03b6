// Scales a vector with libcudavec, then checks it with a kernel of its own; prints the device it ran on.
#include "cudavec.h"
#include <cstdio>
#include <cuda_runtime.h>

__global__ void check_kernel(const float *x, int n, int *bad) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && x[i] != 2.0f * i) atomicAdd(bad, 1);
}

int main() {
    const int n = 1 << 20;
    static float h[1 << 20];
    for (int i = 0; i < n; i++) h[i] = (float)i;
    int rc = cudavec_scale(h, n);
    if (rc != 0) {
        std::printf("vecdemo: no usable GPU: %s\n", cudavec_error(rc));
        return 2;
    }
    float *d; int *bad, nbad = 0;
    cudaMalloc(&d, n * sizeof(float));
    cudaMalloc(&bad, sizeof(int));
    cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(bad, &nbad, sizeof(int), cudaMemcpyHostToDevice);
    check_kernel<<<(n + 255) / 256, 256>>>(d, n, bad);
    cudaMemcpy(&nbad, bad, sizeof(int), cudaMemcpyDeviceToHost);
    cudaDeviceProp prop;
    int dev = 0;
    cudaGetDevice(&dev);
    cudaGetDeviceProperties(&prop, dev);
    std::printf("vecdemo: %d of %d elements scaled correctly on %s (sm_%d%d)\n", n - nbad, n, prop.name,
                prop.major, prop.minor);
    return nbad == 0 ? 0 : 1;
}

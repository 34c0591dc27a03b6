#ifndef CUDAVEC_H
#define CUDAVEC_H
#ifdef __cplusplus
extern "C" {
#endif
/* Multiply the n floats at h by 2 on the GPU. Returns 0, or a cudaError_t code. */
int cudavec_scale(float *h, int n);
const char *cudavec_error(int code);
#ifdef __cplusplus
}
#endif
#endif

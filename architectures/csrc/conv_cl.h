/* One time step of the depthwise causal convolution in the channels-last layout, forward and backward:
   shared by causal_conv.c (conv_*_cl, Hyena) and selective_scan.c (the conv + SiLU ahead of the scan).
   x: a sequence's rows, sx apart (a slice of a projection's output); w, gw: (K, C); bias, gbias: (C) or NULL. */

#ifndef CONV_CL_H
#define CONV_CL_H

#include <stddef.h>

/* yt = bias + sum_k w[k] x_{t - (K - 1 - k)}   (x = 0 before t = 0), x the rows of sequence b */
static inline void conv_cl_step(float *y, const float *x, size_t sx, const float *w, const float *bias, int b, int t, int L,
                                int C, int K) {
    float *restrict yt = y;
#pragma omp simd
    for (int c = 0; c < C; c++) yt[c] = bias ? bias[c] : 0.f;
    for (int k = 0; k < K; k++) {
        const int s = t - (K - 1 - k);
        if (s < 0) continue;
        const float *restrict xs = x + ((size_t)b * L + s) * sx, *restrict wk = w + (size_t)k * C;
#pragma omp simd
        for (int c = 0; c < C; c++) yt[c] += wk[c] * xs[c];
    }
}

/* Its backward at step t of sequence b, whose output gradient's rows start at row g0 of g (rows C apart): gxt (C) is
   written, gw and gbias accumulated into. */
static inline void conv_cl_step_backward(float *gx, float *gw, float *gbias, const float *g, size_t g0, const float *x, size_t sx,
                                         const float *w, int b, int t, int L, int C, int K) {
    const float *restrict gt = g + (g0 + t) * C;
    float *restrict gxt = gx;
#pragma omp simd
    for (int c = 0; c < C; c++) gxt[c] = 0.f;
    for (int k = 0; k < K; k++) {
        const int shift = K - 1 - k, later = t + shift, s = t - shift;
        const float *restrict wk = w + (size_t)k * C;
        float *restrict gwk = gw + (size_t)k * C;
        if (later < L) {
            const float *restrict gl = g + (g0 + later) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) gxt[c] += wk[c] * gl[c];
        }
        if (s >= 0) {
            const float *restrict xs = x + ((size_t)b * L + s) * sx;
#pragma omp simd
            for (int c = 0; c < C; c++) gwk[c] += gt[c] * xs[c];
        }
    }
    if (gbias) {
#pragma omp simd
        for (int c = 0; c < C; c++) gbias[c] += gt[c];
    }
}

#endif

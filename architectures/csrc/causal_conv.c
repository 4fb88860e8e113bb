/* A depthwise causal convolution on a CPU, forward and backward, for the short convolutions
   (Mamba's, Mamba-2's, Hyena's, BaseConv's: 3 or 4 taps). oneDNN's depthwise conv costs ~0.5 ms a
   call at the training shapes for ~1 MFLOP of work; these loops run over time, vectorized.

   y[b, c, t] = bias[c] + sum_k w[c, k] x[b, c, t - (K - 1 - k)]     (x = 0 before t = 0)
   x, y, gy, gx: (batch, C, L); w, gw: (C, K); bias, gbias: (C) or NULL. */

#include <stddef.h>

void conv_forward(const float *x, const float *w, const float *bias, float *y, int batch, int C, int L, int K) {
    for (int b = 0; b < batch; b++)
        for (int c = 0; c < C; c++) {
            const float *restrict xc = x + ((size_t)b * C + c) * L;
            float *restrict yc = y + ((size_t)b * C + c) * L;
            const float *wc = w + (size_t)c * K;
            const float b0 = bias ? bias[c] : 0.f;
#pragma omp simd
            for (int t = 0; t < L; t++) yc[t] = b0;
            for (int k = 0; k < K; k++) {
                const int shift = K - 1 - k;
                const float wk = wc[k];
#pragma omp simd
                for (int t = shift; t < L; t++) yc[t] += wk * xc[t - shift];
            }
        }
}

/* gw and gbias are accumulated into (the caller zeroes them); gx is written. */
void conv_backward(const float *x, const float *w, const float *gy, float *gx, float *gw, float *gbias,
                   int batch, int C, int L, int K) {
    for (int b = 0; b < batch; b++)
        for (int c = 0; c < C; c++) {
            const float *restrict xc = x + ((size_t)b * C + c) * L;
            const float *restrict gc = gy + ((size_t)b * C + c) * L;
            float *restrict gxc = gx + ((size_t)b * C + c) * L;
            const float *wc = w + (size_t)c * K;
#pragma omp simd
            for (int t = 0; t < L; t++) gxc[t] = 0.f;
            for (int k = 0; k < K; k++) {
                const int shift = K - 1 - k;
                const float wk = wc[k];
                float acc = 0.f;
#pragma omp simd reduction(+ : acc)
                for (int t = shift; t < L; t++) {
                    gxc[t - shift] += wk * gc[t];
                    acc += gc[t] * xc[t - shift];
                }
                gw[(size_t)c * K + k] += acc;
            }
            if (gbias) {
                float acc = 0.f;
#pragma omp simd reduction(+ : acc)
                for (int t = 0; t < L; t++) acc += gc[t];
                gbias[c] += acc;
            }
        }
}

/* The same in the channels-last layout (batch, L, C), as a projection leaves its output: the loops
   run over channels. w, gw here (K, C). */
void conv_forward_cl(const float *x, const float *w, const float *bias, float *y, int batch, int C, int L, int K) {
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < L; t++) {
            float *restrict yt = y + ((size_t)b * L + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) yt[c] = bias ? bias[c] : 0.f;
            for (int k = 0; k < K; k++) {
                const int s = t - (K - 1 - k);
                if (s < 0) continue;
                const float *restrict xs = x + ((size_t)b * L + s) * C, *restrict wk = w + (size_t)k * C;
#pragma omp simd
                for (int c = 0; c < C; c++) yt[c] += wk[c] * xs[c];
            }
        }
}

void conv_backward_cl(const float *x, const float *w, const float *gy, float *gx, float *gw, float *gbias,
                      int batch, int C, int L, int K) {
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < L; t++) {
            const float *restrict gt = gy + ((size_t)b * L + t) * C;
            float *restrict gxt = gx + ((size_t)b * L + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) gxt[c] = 0.f;
            for (int k = 0; k < K; k++) {
                const int shift = K - 1 - k, later = t + shift, s = t - shift;
                const float *restrict wk = w + (size_t)k * C;
                float *restrict gwk = gw + (size_t)k * C;
                if (later < L) {
                    const float *restrict gl = gy + ((size_t)b * L + later) * C;
#pragma omp simd
                    for (int c = 0; c < C; c++) gxt[c] += wk[c] * gl[c];
                }
                if (s >= 0) {
                    const float *restrict xs = x + ((size_t)b * L + s) * C;
#pragma omp simd
                    for (int c = 0; c < C; c++) gwk[c] += gt[c] * xs[c];
                }
            }
            if (gbias) {
#pragma omp simd
                for (int c = 0; c < C; c++) gbias[c] += gt[c];
            }
        }
}

/* A depthwise causal convolution on a CPU, forward and backward, for the short convolutions
   (Mamba's, Mamba-2's, Hyena's, BaseConv's: 3 or 4 taps). oneDNN's depthwise conv costs ~0.5 ms a
   call at the training shapes for ~1 MFLOP of work; these loops run over time, vectorized.

   y[b, c, t] = bias[c] + sum_k w[c, k] x[b, c, t - (K - 1 - k)]     (x = 0 before t = 0)
   x, y, gy, gx: (batch, C, L); w, gw: (C, K); bias, gbias: (C) or NULL.

   Below them, Hyena's operator and H3's mixing whole (gates and direct long convolutions), channels-last. */

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conv_cl.h"

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
        for (int t = 0; t < L; t++) conv_cl_step(y + ((size_t)b * L + t) * C, x, C, w, bias, b, t, L, C, K);
}

void conv_backward_cl(const float *x, const float *w, const float *gy, float *gx, float *gw, float *gbias,
                      int batch, int C, int L, int K) {
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < L; t++)
            conv_cl_step_backward(gx + ((size_t)b * L + t) * C, gw, gbias, gy, (size_t)b * L, x, C, w, b, t, L, C, K);
}

/* out[c] += sum_{m < count} a[m * sa + c] b[m * sb + c] for c < D (sa, sb: row steps, +-D): the rows of a
   long convolution, its transpose and its filter's gradient. 32 channels at a time in local accumulators,
   which the compiler keeps in registers across the rows, two of them (even and odd rows) so that the
   FMAs' latency overlaps. */
static inline void dot_rows(float *restrict out, const float *a, ptrdiff_t sa, const float *b, ptrdiff_t sb, int count, int D) {
    int c0 = 0;
    for (; c0 + 32 <= D; c0 += 32) {
        float even[32] = {0}, odd[32] = {0};
        int m = 0;
        for (; m + 1 < count; m += 2) {
            const float *restrict a0 = a + m * sa + c0, *restrict b0 = b + m * sb + c0;
            const float *restrict a1 = a0 + sa, *restrict b1 = b0 + sb;
            for (int i = 0; i < 32; i++) even[i] += a0[i] * b0[i];
            for (int i = 0; i < 32; i++) odd[i] += a1[i] * b1[i];
        }
        if (m < count) {
            const float *restrict a0 = a + m * sa + c0, *restrict b0 = b + m * sb + c0;
            for (int i = 0; i < 32; i++) even[i] += a0[i] * b0[i];
        }
        for (int i = 0; i < 32; i++) out[c0 + i] += even[i] + odd[i];
    }
    for (; c0 < D; c0++)
        for (int m = 0; m < count; m++) out[c0] += a[m * sa + c0] * b[m * sb + c0];
}

/* Hyena's operator (order 2) after its in-projection, channels-last, one call each way: p (batch, L, 3D)
   the projection's rows [x0 | x1 | v] before the short conv (w (K, 3D), bias (3D)); hT (L, D) the long
   filter by lag; skip (D) its bias:
     xs = conv(p),  u = x1 v,  z_t = sum_{s <= t} h[t - s] u_s + skip u_t,  y = x0 z.
   xs (batch, L, 3D) and z (batch, L, D) are kept for the backward. */
int hyena_forward(const float *p, const float *w, const float *bias, const float *hT, const float *skip, float *y,
                  float *xs, float *z, int batch, int L, int D, int K) {
    const int C3 = 3 * D;
    float *u = malloc(sizeof(float) * (size_t)L * D);
    if (!u) return 1;
    conv_forward_cl(p, w, bias, xs, batch, C3, L, K);
    for (int b = 0; b < batch; b++) {
        const float *xb = xs + (size_t)b * L * C3;
        for (int t = 0; t < L; t++) {
            const float *restrict x1 = xb + (size_t)t * C3 + D, *restrict v = x1 + D;
            float *restrict ut = u + (size_t)t * D;
#pragma omp simd
            for (int d = 0; d < D; d++) ut[d] = x1[d] * v[d];
        }
        for (int t = 0; t < L; t++) {
            float *restrict zt = z + ((size_t)b * L + t) * D, *restrict yt = y + ((size_t)b * L + t) * D;
            const float *restrict ut = u + (size_t)t * D, *restrict x0 = xb + (size_t)t * C3;
#pragma omp simd
            for (int d = 0; d < D; d++) zt[d] = skip[d] * ut[d];
            dot_rows(zt, hT + (size_t)t * D, -D, u, D, t + 1, D); /* lags t..0 against u_0..u_t */
#pragma omp simd
            for (int d = 0; d < D; d++) yt[d] = x0[d] * zt[d];
        }
    }
    free(u);
    return 0;
}

/* gp (batch, L, 3D) is written; gw, gbias, ghT and gskip are accumulated into (the caller zeroes them). */
int hyena_backward(const float *p, const float *w, const float *hT, const float *skip, const float *xs, const float *z,
                   const float *gy, float *gp, float *gw, float *gbias, float *ghT, float *gskip, int batch, int L, int D, int K) {
    const int C3 = 3 * D;
    const size_t LD = (size_t)L * D;
    float *u = malloc(sizeof(float) * LD), *gz = malloc(sizeof(float) * LD), *gxs = malloc(sizeof(float) * LD * 3);
    int failed = !(u && gz && gxs);
    for (int b = 0; b < batch && !failed; b++) {
        const float *xb = xs + (size_t)b * L * C3;
        for (int t = 0; t < L; t++) {
            const float *restrict x0 = xb + (size_t)t * C3, *restrict x1 = x0 + D, *restrict v = x1 + D;
            const float *restrict gyt = gy + ((size_t)b * L + t) * D, *restrict zt = z + ((size_t)b * L + t) * D;
            float *restrict ut = u + (size_t)t * D, *restrict gzt = gz + (size_t)t * D, *restrict gx0 = gxs + (size_t)t * C3;
#pragma omp simd
            for (int d = 0; d < D; d++) {
                ut[d] = x1[d] * v[d];
                gzt[d] = gyt[d] * x0[d];
                gx0[d] = gyt[d] * zt[d];
                gskip[d] += gzt[d] * ut[d];
            }
        }
        for (int k = 0; k < L; k++) dot_rows(ghT + (size_t)k * D, gz + (size_t)k * D, D, u, D, L - k, D); /* the filter's, lag k */
        for (int s = 0; s < L; s++) { /* u's gradient, then x1's and v's */
            float *restrict gu = gxs + (size_t)s * C3 + D; /* x1's slot, as scratch */
            const float *restrict gzs = gz + (size_t)s * D;
#pragma omp simd
            for (int d = 0; d < D; d++) gu[d] = skip[d] * gzs[d];
            dot_rows(gu, hT, D, gz + (size_t)s * D, D, L - s, D);
            const float *restrict x1 = xb + (size_t)s * C3 + D, *restrict v = x1 + D;
            float *restrict gv = gu + D;
#pragma omp simd
            for (int d = 0; d < D; d++) {
                gv[d] = gu[d] * x1[d];
                gu[d] *= v[d];
            }
        }
        conv_backward_cl(p + (size_t)b * L * C3, w, gxs, gp + (size_t)b * L * C3, gw, gbias, 1, C3, L, K);
    }
    free(u); free(gz); free(gxs);
    return failed;
}

/* H3's mixing (architectures/h3.py, _mix) after its projections, channels-last: q, k (the shifted keys),
   v (batch, L, D), D = heads x hd, channel c = h hd + j with key channels g(c, i) = h hd + i; f (L, D) each
   channel's head filter by lag; Dc (D) its head's skip:
     out_t[c] = sum_i q_t[g(c, i)] z_i,t[c],  z_i,t[c] = sum_{s <= t} f[t - s][c] kv_i,s[c] + Dc[c] kv_i,t[c],
     kv_i,s[c] = k_s[g(c, i)] v_s[c].
   z (batch, hd, L, D) is kept for the backward. */
/* g[c] = g(c, i), the key channel that meets value channel c in pair i. */
static void h3_keys(int *g, int D, int hd, int i) {
    for (int c = 0; c < D; c++) g[c] = c - c % hd + i;
}

/* kv_s[c] = k_s[g[c]] v_s[c] for every s. */
static void h3_pairs(float *restrict kv, const float *restrict k, const float *restrict v, const int *restrict g, int L, int D) {
    for (int s = 0; s < L; s++) {
        const float *restrict ks = k + (size_t)s * D, *restrict vs = v + (size_t)s * D;
        float *restrict kvs = kv + (size_t)s * D;
#pragma omp simd
        for (int c = 0; c < D; c++) kvs[c] = ks[g[c]] * vs[c];
    }
}

/* out[h hd + i] += sum_j x[h hd + j]: a key channel's share of its head's pairs. */
static void h3_gather(float *restrict out, const float *restrict x, int D, int hd, int i) {
    for (int h = 0; h < D; h += hd) {
        float acc = 0.f;
        for (int j = 0; j < hd; j++) acc += x[h + j];
        out[h + i] += acc;
    }
}

int h3_forward(const float *q, const float *k, const float *v, const float *f, const float *Dc, float *out, float *z,
               int batch, int L, int D, int hd) {
    const size_t LD = (size_t)L * D;
    float *kv = malloc(sizeof(float) * LD);
    int *g = malloc(sizeof(int) * D);
    if (!kv || !g) {
        free(kv); free(g);
        return 1;
    }
    for (int b = 0; b < batch; b++) {
        const float *qb = q + b * LD, *kb = k + b * LD, *vb = v + b * LD;
        float *ob = out + b * LD;
        memset(ob, 0, sizeof(float) * LD);
        for (int i = 0; i < hd; i++) {
            float *zb = z + ((size_t)b * hd + i) * LD;
            h3_keys(g, D, hd, i);
            h3_pairs(kv, kb, vb, g, L, D);
            for (int t = 0; t < L; t++) {
                float *restrict zt = zb + (size_t)t * D, *restrict ot = ob + (size_t)t * D;
                const float *restrict kt = kv + (size_t)t * D, *restrict qt = qb + (size_t)t * D;
#pragma omp simd
                for (int c = 0; c < D; c++) zt[c] = Dc[c] * kt[c];
                dot_rows(zt, f + (size_t)t * D, -D, kv, D, t + 1, D);
#pragma omp simd
                for (int c = 0; c < D; c++) ot[c] += qt[g[c]] * zt[c];
            }
        }
    }
    free(kv); free(g);
    return 0;
}

/* gq, gk, gv (batch, L, D) are written; gf (L, D) and gDc (D) accumulated into (the caller zeroes them). */
int h3_backward(const float *q, const float *k, const float *v, const float *f, const float *Dc, const float *z,
                const float *gout, float *gq, float *gk, float *gv, float *gf, float *gDc, int batch, int L, int D, int hd) {
    const size_t LD = (size_t)L * D;
    float *kv = malloc(sizeof(float) * LD), *gz = malloc(sizeof(float) * LD), *gkv = malloc(sizeof(float) * 2 * D);
    int *g = malloc(sizeof(int) * D);
    int failed = !(kv && gz && gkv && g);
    for (int b = 0; b < batch && !failed; b++) {
        const float *qb = q + b * LD, *kb = k + b * LD, *vb = v + b * LD, *gb = gout + b * LD;
        float *gqb = gq + b * LD, *gkb = gk + b * LD, *gvb = gv + b * LD, *prod = gkv + D;
        memset(gqb, 0, sizeof(float) * LD);
        memset(gkb, 0, sizeof(float) * LD);
        memset(gvb, 0, sizeof(float) * LD);
        for (int i = 0; i < hd; i++) {
            const float *zb = z + ((size_t)b * hd + i) * LD;
            h3_keys(g, D, hd, i);
            h3_pairs(kv, kb, vb, g, L, D);
            for (int t = 0; t < L; t++) { /* through the query: gz = gout q, gq += gout z */
                const float *restrict gt = gb + (size_t)t * D, *restrict qt = qb + (size_t)t * D, *restrict zt = zb + (size_t)t * D;
                float *restrict gzt = gz + (size_t)t * D;
#pragma omp simd
                for (int c = 0; c < D; c++) {
                    gzt[c] = gt[c] * qt[g[c]];
                    prod[c] = gt[c] * zt[c];
                }
                h3_gather(gqb + (size_t)t * D, prod, D, hd, i);
            }
            for (int t = 0; t < L; t++) { /* the skip's gradient */
                const float *restrict gzt = gz + (size_t)t * D, *restrict kt = kv + (size_t)t * D;
#pragma omp simd
                for (int c = 0; c < D; c++) gDc[c] += gzt[c] * kt[c];
            }
            for (int lag = 0; lag < L; lag++) /* the filter's gradient */
                dot_rows(gf + (size_t)lag * D, gz + (size_t)lag * D, D, kv, D, L - lag, D);
            for (int s = 0; s < L; s++) { /* the pairs' gradient, then the keys' and values' */
                const float *restrict gzs = gz + (size_t)s * D, *restrict ks = kb + (size_t)s * D, *restrict vs = vb + (size_t)s * D;
#pragma omp simd
                for (int c = 0; c < D; c++) gkv[c] = Dc[c] * gzs[c];
                dot_rows(gkv, f, D, gz + (size_t)s * D, D, L - s, D);
                float *restrict gvs = gvb + (size_t)s * D;
#pragma omp simd
                for (int c = 0; c < D; c++) {
                    gvs[c] += gkv[c] * ks[g[c]];
                    prod[c] = gkv[c] * vs[c];
                }
                h3_gather(gkb + (size_t)s * D, prod, D, hd, i);
            }
        }
    }
    free(kv); free(gz); free(gkv); free(g);
    return failed;
}

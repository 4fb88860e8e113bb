/* The gated linear recurrence on a CPU, forward and backward, token by token with the state in cache:
   GLA, WLA and linear attention (architectures/linear_recurrence.py's chunked_gla). At the training shapes
   (L 64, small heads) the chunked form spends its time in many small products; here each step is one pass
   over a K x V state. Based keeps the chunked form: at K 273 its one chunk is a product MKL does faster.

   Per sequence (one batch element and head), key-major state S (K x V), S_0 = 0:
       S_t = diag(w_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t
   Time-major, as the projections leave them: q, k: (B, L, H, K); v, o: (B, L, H, V); w: (B, L, H, K)
   (mode 2), (B, L, H) (mode 1: one decay per head) or NULL (mode 0: no decay).
   ckpt: (B, H, lr_chunks(L, K, V), K, V), the state entering every CHUNK-th step, kept for the backward,
   which recomputes one chunk's states at a time from it. Float and double versions (_f32, _f64).
   Return 0, or 1 when a buffer could not be allocated. */

#ifndef T

#include "state_kernels.h"

int lr_chunks(int L, int K, int V) { return chunks(L, K, V); }

#define BODY "linear_recurrence.c"
#include "instantiate.h"

#else

#include "state_kernels.h" /* its part per scalar type */

/* Rows i, i + 1 (R = 2) or i (R = 1) of one step: out = diag(w) S + k v^T (out may be S); o += out^T q when o */
INLINE void FN(step_rows)(const int R, const T *S, T *out, const T *q, const T *k, const T *v, const T *w,
                          const int mode, T *restrict o, int i, int V) {
    const T *s0 = S + (size_t)i * V, *s1 = s0 + V;
    T *r0 = out + (size_t)i * V, *r1 = r0 + V; /* may be S itself */
    const T w0 = FN(decay)(w, mode, i), w1 = R == 2 ? FN(decay)(w, mode, i + 1) : 0;
    const T k0 = k[i], k1 = R == 2 ? k[i + 1] : 0, q0 = o ? q[i] : 0, q1 = o && R == 2 ? q[i + 1] : 0;
#pragma omp simd
    for (int j = 0; j < V; j++) {
        const T vj = v[j];
        const T x0 = (mode ? w0 * s0[j] : s0[j]) + k0 * vj;
        r0[j] = x0;
        if (R == 2) {
            const T x1 = (mode ? w1 * s1[j] : s1[j]) + k1 * vj;
            r1[j] = x1;
            if (o) o[j] += q0 * x0 + q1 * x1;
        } else if (o)
            o[j] += q0 * x0;
    }
}

INLINE void FN(step)(const T *S, T *out, const T *q, const T *k, const T *v, const T *w, const int mode,
                     T *restrict o, int K, int V) {
    if (o) memset(o, 0, sizeof(T) * V);
    int i = 0;
    for (; i + 1 < K; i += 2) FN(step_rows)(2, S, out, q, k, v, w, mode, o, i, V);
    if (i < K) FN(step_rows)(1, S, out, q, k, v, w, mode, o, i, V);
}

INLINE void FN(forward_seq)(const T *q, const T *k, const T *v, const T *w, T *o, T *cq, T *S, int L,
                            int K, const int V, size_t sK, size_t sV, size_t sW, const int mode) {
    const size_t KV = (size_t)K * V;
    memset(S, 0, sizeof(T) * KV);
    for (int t = 0; t < L; t++) {
        if (cq && t % CHUNK == 0) memcpy(cq + (size_t)(t / CHUNK) * KV, S, sizeof(T) * KV);
        FN(step)(S, S, q + t * sK, k + t * sK, v + t * sV, w ? w + t * sW : NULL, mode, o + t * sV, K, V);
    }
}

/* the value dims of the suite's models (IF_V: state_kernels.h) */
#define DISPATCH_V(CALL, arg) IF_V(16, CALL, arg) IF_V(32, CALL, arg) IF_V(64, CALL, arg) ELSE_V(CALL, arg)

int FN(lr_forward)(const T *q, const T *k, const T *v, const T *w, T *o, T *ckpt, int B, int H, int L,
                   int K, int V, int mode) {
    const size_t KV = (size_t)K * V;
    const int wn = mode == 2 ? K : mode, nck = lr_chunks(L, K, V);
    const size_t sK = (size_t)H * K, sV = (size_t)H * V, sW = (size_t)H * wn;
    T *S = malloc(sizeof(T) * KV);
    if (!S) return 1;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H; /* (batch, head)'s first token in (B, L, H, .) */
        const T *wq = w ? w + row * wn : NULL;
        T *cq = ckpt ? ckpt + (size_t)n * nck * KV : NULL;
#define FWD(m) FN(forward_seq)(q + row * K, k + row * K, v + row * V, wq, o + row * V, cq, S, L, K, VC, sK, sV, sW, m)
        DISPATCH_V(DISPATCH_MODE, FWD)
#undef FWD
    }
    free(S);
    return 0;
}

/* Token t backwards on rows i (, i + 1), dS the gradient of S_t from later tokens (becomes S_{t-1}'s): with
   e = dS + q g^T, dq = S_t g, dk = e v, dv = e^T k, dw = diag(e S_{t-1}^T) (summed over rows in mode 1), dS = diag(w) e. */
INLINE void FN(back_rows)(const int R, T *dS, const T *Sc, const T *Sp, const T *g, const T *q, const T *k,
                          const T *v, const T *w, const int mode, T *dq, T *dk, T *restrict dv, T *dw,
                          T *dw_sum, int i, int V) {
    T *restrict d0 = dS + (size_t)i * V, *restrict d1 = d0 + V;
    const T *c0 = Sc + (size_t)i * V, *c1 = c0 + V, *p0 = Sp + (size_t)i * V, *p1 = p0 + V;
    const T q0 = q[i], k0 = k[i], w0 = FN(decay)(w, mode, i);
    const T q1 = R == 2 ? q[i + 1] : 0, k1 = R == 2 ? k[i + 1] : 0, w1 = R == 2 ? FN(decay)(w, mode, i + 1) : 0;
    T gq0 = 0, gk0 = 0, gw0 = 0, gq1 = 0, gk1 = 0, gw1 = 0;
#pragma omp simd reduction(+ : gq0, gk0, gw0, gq1, gk1, gw1)
    for (int j = 0; j < V; j++) {
        const T gj = g[j], vj = v[j];
        const T e0 = d0[j] + q0 * gj;
        gq0 += c0[j] * gj;
        gk0 += e0 * vj;
        if (mode) gw0 += e0 * p0[j];
        d0[j] = mode ? w0 * e0 : e0;
        T dvj = k0 * e0;
        if (R == 2) {
            const T e1 = d1[j] + q1 * gj;
            gq1 += c1[j] * gj;
            gk1 += e1 * vj;
            if (mode) gw1 += e1 * p1[j];
            d1[j] = mode ? w1 * e1 : e1;
            dvj += k1 * e1;
        }
        dv[j] += dvj;
    }
    dq[i] = gq0, dk[i] = gk0;
    if (R == 2) dq[i + 1] = gq1, dk[i + 1] = gk1;
    if (mode == 2) {
        dw[i] = gw0;
        if (R == 2) dw[i + 1] = gw1;
    } else if (mode == 1)
        *dw_sum += gw0 + gw1;
}

INLINE void FN(back_step)(T *dS, const T *Sc, const T *Sp, const T *g, const T *q, const T *k,
                          const T *v, const T *w, const int mode, T *dq, T *dk, T *dv, T *dw, int K, int V) {
    T dw_sum = 0;
    memset(dv, 0, sizeof(T) * V);
    int i = 0;
    for (; i + 1 < K; i += 2) FN(back_rows)(2, dS, Sc, Sp, g, q, k, v, w, mode, dq, dk, dv, dw, &dw_sum, i, V);
    if (i < K) FN(back_rows)(1, dS, Sc, Sp, g, q, k, v, w, mode, dq, dk, dv, dw, &dw_sum, i, V);
    if (mode == 1) dw[0] = dw_sum;
}

INLINE void FN(backward_seq)(const T *q, const T *k, const T *v, const T *w, const T *cq, const T *go,
                             T *dq, T *dk, T *dv, T *dw, T *St, T *dS, int L, int K, const int V, size_t sK,
                             size_t sV, size_t sW, const int mode) {
    const size_t KV = (size_t)K * V;
    const int nck = lr_chunks(L, K, V), C = CHUNK;
    memset(dS, 0, sizeof(T) * KV);
    for (int c = nck - 1; c >= 0; c--) {
        const int t0 = c * C, steps = L - t0 < C ? L - t0 : C;
        memcpy(St, cq + (size_t)c * KV, sizeof(T) * KV);
        for (int s = 0; s < steps; s++) {
            const size_t t = t0 + s;
            FN(step)(St + s * KV, St + (s + 1) * KV, NULL, k + t * sK, v + t * sV, w ? w + t * sW : NULL, mode, NULL, K, V);
        }
        for (int s = steps - 1; s >= 0; s--) {
            const size_t t = t0 + s;
            FN(back_step)(dS, St + (s + 1) * KV, St + s * KV, go + t * sV, q + t * sK, k + t * sK, v + t * sV,
                          w ? w + t * sW : NULL, mode, dq + t * sK, dk + t * sK, dv + t * sV, dw ? dw + t * sW : NULL, K, V);
        }
    }
}

/* go: the outputs' gradient (B, L, H, V); every gradient is written (dw: NULL in mode 0) */
int FN(lr_backward)(const T *q, const T *k, const T *v, const T *w, const T *ckpt, const T *go, T *dq,
                    T *dk, T *dv, T *dw, int B, int H, int L, int K, int V, int mode) {
    const size_t KV = (size_t)K * V;
    const int wn = mode == 2 ? K : mode, nck = lr_chunks(L, K, V), C = CHUNK;
    const size_t sK = (size_t)H * K, sV = (size_t)H * V, sW = (size_t)H * wn;
    T *St = malloc(sizeof(T) * KV * (C + 2));
    if (!St) return 1;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H;
        const size_t nK = row * K, nV = row * V, nW = row * wn;
        const T *cq = ckpt + (size_t)n * nck * KV;
#define BWD(m)                                                                                                                \
    FN(backward_seq)(q + nK, k + nK, v + nV, w ? w + nW : NULL, cq, go + nV, dq + nK, dk + nK, dv + nV, dw ? dw + nW : NULL, St, \
                     St + KV * (C + 1), L, K, VC, sK, sV, sW, m)
        DISPATCH_V(DISPATCH_MODE, BWD)
#undef BWD
    }
    free(St);
    return 0;
}

#undef DISPATCH_V

#endif

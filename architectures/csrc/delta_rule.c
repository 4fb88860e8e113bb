/* The delta rules on a CPU, forward and backward, token by token with the state in cache: DeltaNet's,
   Gated DeltaNet's and RWKV-7's recurrence (architectures/delta_rule.py), and the elementwise steps around
   them in the training step (q/k normalization, the readouts' norms and gates). At the training shapes
   (L 64, head dims 32-64) the chunked form spends its time in many small batched products and triangular
   solves, and PyTorch's composites in a dozen passes each; here each step is a pass or two over a K x V
   state that stays in cache.

   Generalized (dr_*: RWKV-7), per sequence (one batch element and head), key-major state S (K x V):
       x_t = S_{t-1}^T a_t,   S_t = diag(w_t) S_{t-1} + b_t x_t^T + k_t v_t^T,   o_t = S_t^T q_t
   Time-major, as the projections leave them: q, k, a, b: (B, L, H, K); v, o: (B, L, H, V); w: (B, L, H, K)
   (w_mode 2), (B, L, H) (w_mode 1: one decay per head, shared by its key dims), or NULL (w_mode 0: no
   decay). s0, s_final: (B, H, K, V) or NULL.
   ckpt: (B, H, dr_chunks(L, K, V), K, V), the state entering every CHUNK-th step, kept for the backward,
   which recomputes the states of one chunk at a time from it. The delta rule (dl_*) below the same way.
   Float and double versions (_f32, _f64). Return 0, or 1 when a buffer could not be allocated. */

#ifndef DR_T

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* steps per checkpoint: the backward keeps CHUNK + 1 states of a sequence; 32 while they stay well inside
   L2 (K V <= 2048), else 16 */
#define CHUNK dr_chunk_len(K, V)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* rows of 32-64 values: 512-bit vectors leave half-filled loops and cost more than they bring */
#pragma GCC target("prefer-vector-width=256")
#endif

static inline int dr_chunk_len(int K, int V) { return (size_t)K * V <= 2048 ? 32 : 16; }

int dr_chunks(int L, int K, int V) { return (L + CHUNK - 1) / CHUNK; }

#define DR_T float
#define DR(name) name##_f32
#include __FILE__
#undef DR_T
#undef DR
#define DR_T double
#define DR(name) name##_f64
#include __FILE__

#else

#define INLINE static inline __attribute__((always_inline))
/* value dims as compile-time constants (the loops unroll into registers) only in fp32, the training dtype:
   fp64 (the tests) takes the generic loops and the build stays short */
#define FAST (sizeof(DR_T) == 4)

INLINE DR_T DR(decay)(const DR_T *w, const int mode, int i) { return mode == 2 ? w[i] : mode == 1 ? w[0] : (DR_T)1; }

/* x = S^T a (x: NULL when given in xin); out = diag(w) S + b x^T + k v^T (out may be S); o = out^T q (o may be
   NULL), and with o, xn = out^T an (the next step's x) unless an is NULL. Four rows at a time, so that x, v
   and o are loaded once for four rows. */
INLINE void DR(step)(const DR_T *S, DR_T *out, DR_T *restrict x, const DR_T *xin, const DR_T *q, const DR_T *k,
                     const DR_T *v, const DR_T *a, const DR_T *b, const DR_T *w, const int mode, DR_T *restrict o,
                     const DR_T *an, DR_T *restrict xn, int K, int V) {
    int i;
    if (x) {
        memset(x, 0, sizeof(DR_T) * V);
        for (i = 0; i + 3 < K; i += 4) {
            const DR_T a0 = a[i], a1 = a[i + 1], a2 = a[i + 2], a3 = a[i + 3];
            const DR_T *restrict s = S + (size_t)i * V;
#pragma omp simd
            for (int j = 0; j < V; j++) x[j] += a0 * s[j] + a1 * s[V + j] + a2 * s[2 * V + j] + a3 * s[3 * V + j];
        }
        for (; i < K; i++) {
            const DR_T ai = a[i];
            const DR_T *restrict s = S + (size_t)i * V;
#pragma omp simd
            for (int j = 0; j < V; j++) x[j] += ai * s[j];
        }
        xin = x;
    }
    if (o) memset(o, 0, sizeof(DR_T) * V);
    if (an) memset(xn, 0, sizeof(DR_T) * V);
    for (i = 0; i + 3 < K; i += 4) {
        DR_T wr[4], br[4], kr[4], qr[4], nr[4];
        for (int r = 0; r < 4; r++) {
            wr[r] = DR(decay)(w, mode, i + r), br[r] = b[i + r], kr[r] = k[i + r], qr[r] = o ? q[i + r] : 0;
            nr[r] = an ? an[i + r] : 0;
        }
        const DR_T *s = S + (size_t)i * V;
        DR_T *u = out + (size_t)i * V;
        if (o && an) { /* and the next step's x = out^T a_{t+1}, saving it a pass over the state */
#pragma omp simd
            for (int j = 0; j < V; j++) {
                const DR_T xj = xin[j], vj = v[j];
                const DR_T r0 = wr[0] * s[j] + br[0] * xj + kr[0] * vj, r1 = wr[1] * s[V + j] + br[1] * xj + kr[1] * vj;
                const DR_T r2 = wr[2] * s[2 * V + j] + br[2] * xj + kr[2] * vj;
                const DR_T r3 = wr[3] * s[3 * V + j] + br[3] * xj + kr[3] * vj;
                u[j] = r0, u[V + j] = r1, u[2 * V + j] = r2, u[3 * V + j] = r3;
                o[j] += qr[0] * r0 + qr[1] * r1 + qr[2] * r2 + qr[3] * r3;
                xn[j] += nr[0] * r0 + nr[1] * r1 + nr[2] * r2 + nr[3] * r3;
            }
        } else if (o) {
#pragma omp simd
            for (int j = 0; j < V; j++) {
                const DR_T xj = xin[j], vj = v[j];
                const DR_T r0 = wr[0] * s[j] + br[0] * xj + kr[0] * vj, r1 = wr[1] * s[V + j] + br[1] * xj + kr[1] * vj;
                const DR_T r2 = wr[2] * s[2 * V + j] + br[2] * xj + kr[2] * vj;
                const DR_T r3 = wr[3] * s[3 * V + j] + br[3] * xj + kr[3] * vj;
                u[j] = r0, u[V + j] = r1, u[2 * V + j] = r2, u[3 * V + j] = r3;
                o[j] += qr[0] * r0 + qr[1] * r1 + qr[2] * r2 + qr[3] * r3;
            }
        } else {
#pragma omp simd
            for (int j = 0; j < V; j++) {
                const DR_T xj = xin[j], vj = v[j];
                u[j] = wr[0] * s[j] + br[0] * xj + kr[0] * vj;
                u[V + j] = wr[1] * s[V + j] + br[1] * xj + kr[1] * vj;
                u[2 * V + j] = wr[2] * s[2 * V + j] + br[2] * xj + kr[2] * vj;
                u[3 * V + j] = wr[3] * s[3 * V + j] + br[3] * xj + kr[3] * vj;
            }
        }
    }
    for (; i < K; i++) {
        const DR_T wi = DR(decay)(w, mode, i), bi = b[i], ki = k[i], qi = o ? q[i] : 0, ni = an ? an[i] : 0;
        const DR_T *s = S + (size_t)i * V;
        DR_T *u = out + (size_t)i * V;
        if (o) {
#pragma omp simd
            for (int j = 0; j < V; j++) {
                u[j] = wi * s[j] + bi * xin[j] + ki * v[j];
                o[j] += qi * u[j];
            }
            if (an) {
#pragma omp simd
                for (int j = 0; j < V; j++) xn[j] += ni * u[j];
            }
        } else {
#pragma omp simd
            for (int j = 0; j < V; j++) u[j] = wi * s[j] + bi * xin[j] + ki * v[j];
        }
    }
}

INLINE void DR(forward_seq)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *a, const DR_T *b, const DR_T *w,
                            const DR_T *s0, DR_T *o, DR_T *ckpt, DR_T *xs, DR_T *S, DR_T *x, int L, int K, int V,
                            size_t sK, size_t sV, size_t sW, const int mode) {
    const size_t KV = (size_t)K * V;
    if (s0)
        memcpy(S, s0, sizeof(DR_T) * KV);
    else
        memset(S, 0, sizeof(DR_T) * KV);
    DR_T *xt = xs ? xs : x; /* x_t: computed by step t - 1 (x_0 by step 0 itself); x: two buffers */
    for (int t = 0; t < L; t++) {
        if (ckpt && t % CHUNK == 0) memcpy(ckpt + (size_t)(t / CHUNK) * KV, S, sizeof(DR_T) * KV);
        DR_T *xn = t + 1 == L ? xt : xs ? xs + (t + 1) * sV : xt == x ? x + V : x;
        DR(step)(S, S, t == 0 ? xt : NULL, xt, q + t * sK, k + t * sK, v + t * sV, a + t * sK, b + t * sK,
                 w ? w + t * sW : NULL, mode, o + t * sV, t + 1 < L ? a + (t + 1) * sK : NULL, xn, K, V);
        xt = xn;
    }
}

/* xs: (B, L, H, V), the x_t's, kept for the backward (NULL with ckpt when no gradient is wanted) */
int DR(dr_forward)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *a, const DR_T *b, const DR_T *w,
                   const DR_T *s0, DR_T *o, DR_T *ckpt, DR_T *xs, DR_T *s_final, int B, int H, int L, int K, int V, int mode) {
    const size_t KV = (size_t)K * V;
    const int wn = mode == 2 ? K : mode, nck = dr_chunks(L, K, V);
    const size_t sK = (size_t)H * K, sV = (size_t)H * V, sW = (size_t)H * wn;
    DR_T *S = malloc(sizeof(DR_T) * (KV + 2 * (size_t)V));
    if (!S) return 1;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H; /* (batch, head)'s first token in (B, L, H, .) */
        const size_t nK = row * K, nV = row * V;
        const DR_T *wq = w ? w + row * wn : NULL, *sq = s0 ? s0 + n * KV : NULL;
        DR_T *cq = ckpt ? ckpt + (size_t)n * nck * KV : NULL, *xq = xs ? xs + nV : NULL;
#define FWD(m) DR(forward_seq)(q + nK, k + nK, v + nV, a + nK, b + nK, wq, sq, o + nV, cq, xq, S, S + KV, L, K, VC, sK, sV, sW, m)
#define FWD_V(m)    \
    if (FAST && V == 64) {  \
        enum { VC = 64 }; \
        FWD(m);     \
    } else if (FAST && V == 32) { \
        enum { VC = 32 }; \
        FWD(m);     \
    } else {        \
        const int VC = V; \
        FWD(m);     \
    }
        if (mode == 2) {
            FWD_V(2)
        } else if (mode == 1) {
            FWD_V(1)
        } else {
            FWD_V(0)
        }
#undef FWD_V
#undef FWD
        if (s_final) memcpy(s_final + n * KV, S, sizeof(DR_T) * KV);
    }
    free(S);
    return 0;
}

/* The backward through R (1 or 2) rows of the state at once, the rows' shared vectors loaded once.
   A (hasA): token t, dS += q g^T, then the gradients through S_t = diag(w) S_{t-1} + b x^T + k v^T:
   dq = S_t g, dk = dS v, db = dS x, dw = diag(dS S_{t-1}^T), dv += dS^T k, dx += dS^T b.
   B (hasB, done first on the same rows): token t + 1's last part, through x_{t+1} = S_t^T a_{t+1}:
   da_{t+1} = S_t dxn, dS_t = diag(w_{t+1}) dS + a_{t+1} dxn^T. Sc: S_t's rows (B's S_t too), Sp: S_{t-1}'s. */
INLINE void DR(rows)(const int R, const int hasA, const int hasB, const int mode, DR_T *d, const DR_T *Sc, const DR_T *Sp,
                     const DR_T *g, const DR_T *v, const DR_T *x, DR_T *restrict dv, DR_T *restrict dx, const DR_T *dxn,
                     const DR_T *qt, const DR_T *kt, const DR_T *bt, DR_T *dq, DR_T *dk, DR_T *db, DR_T *dwt, DR_T *dw_sum,
                     const DR_T *an, const DR_T *wn_, DR_T *dan, int i, int V) {
    DR_T *restrict d0 = d + (size_t)i * V, *restrict d1 = d0 + V;
    const DR_T *restrict c0 = Sc + (size_t)i * V, *restrict c1 = c0 + V;
    const DR_T *restrict p0 = hasA ? Sp + (size_t)i * V : NULL, *restrict p1 = hasA ? p0 + V : NULL;
    const DR_T q0 = hasA ? qt[i] : 0, k0 = hasA ? kt[i] : 0, b0 = hasA ? bt[i] : 0;
    const DR_T q1 = hasA && R == 2 ? qt[i + 1] : 0, k1 = hasA && R == 2 ? kt[i + 1] : 0, b1 = hasA && R == 2 ? bt[i + 1] : 0;
    const DR_T a0 = hasB ? an[i] : 0, w0 = hasB ? DR(decay)(wn_, mode, i) : 0;
    const DR_T a1 = hasB && R == 2 ? an[i + 1] : 0, w1 = hasB && R == 2 ? DR(decay)(wn_, mode, i + 1) : 0;
    DR_T gq0 = 0, gk0 = 0, gb0 = 0, gw0 = 0, ga0 = 0, gq1 = 0, gk1 = 0, gb1 = 0, gw1 = 0, ga1 = 0;
#pragma omp simd reduction(+ : gq0, gk0, gb0, gw0, ga0, gq1, gk1, gb1, gw1, ga1)
    for (int j = 0; j < V; j++) {
        DR_T e0 = d0[j], e1 = R == 2 ? d1[j] : 0;
        const DR_T s0 = c0[j], s1 = R == 2 ? c1[j] : 0;
        if (hasB) {
            const DR_T dxj = dxn[j];
            ga0 += s0 * dxj;
            e0 = w0 * e0 + a0 * dxj;
            if (R == 2) {
                ga1 += s1 * dxj;
                e1 = w1 * e1 + a1 * dxj;
            }
        }
        if (hasA) {
            const DR_T gj = g[j], vj = v[j], xj = x[j];
            e0 += q0 * gj;
            gq0 += s0 * gj;
            gk0 += e0 * vj;
            gb0 += e0 * xj;
            if (mode) gw0 += e0 * p0[j];
            DR_T dvj = k0 * e0, dxj = b0 * e0;
            if (R == 2) {
                e1 += q1 * gj;
                gq1 += s1 * gj;
                gk1 += e1 * vj;
                gb1 += e1 * xj;
                if (mode) gw1 += e1 * p1[j];
                dvj += k1 * e1;
                dxj += b1 * e1;
            }
            dv[j] += dvj;
            dx[j] += dxj;
        }
        d0[j] = e0;
        if (R == 2) d1[j] = e1;
    }
    if (hasB) {
        dan[i] = ga0;
        if (R == 2) dan[i + 1] = ga1;
    }
    if (hasA) {
        dq[i] = gq0, dk[i] = gk0, db[i] = gb0;
        if (R == 2) dq[i + 1] = gq1, dk[i + 1] = gk1, db[i + 1] = gb1;
        if (mode == 2) {
            dwt[i] = gw0;
            if (R == 2) dwt[i + 1] = gw1;
        } else if (mode == 1)
            *dw_sum += gw0 + gw1;
    }
}

/* One pass over all K rows: A of token t and/or B of token t + 1 (see `rows`). */
INLINE void DR(pass)(const int hasA, const int hasB, const int mode, DR_T *d, const DR_T *Sc, const DR_T *Sp, const DR_T *g,
                     const DR_T *v, const DR_T *x, DR_T *dv, DR_T *dx, const DR_T *dxn, const DR_T *qt, const DR_T *kt,
                     const DR_T *bt, DR_T *dq, DR_T *dk, DR_T *db, DR_T *dwt, const DR_T *an, const DR_T *wn_, DR_T *dan,
                     int K, int V) {
    DR_T dw_sum = 0;
    if (hasA) {
        memset(dv, 0, sizeof(DR_T) * V);
        memset(dx, 0, sizeof(DR_T) * V);
    }
    int i = 0;
    for (; i + 1 < K; i += 2)
        DR(rows)(2, hasA, hasB, mode, d, Sc, Sp, g, v, x, dv, dx, dxn, qt, kt, bt, dq, dk, db, dwt, &dw_sum, an, wn_, dan, i, V);
    if (i < K)
        DR(rows)(1, hasA, hasB, mode, d, Sc, Sp, g, v, x, dv, dx, dxn, qt, kt, bt, dq, dk, db, dwt, &dw_sum, an, wn_, dan, i, V);
    if (hasA && mode == 1) dwt[0] = dw_sum;
}

INLINE void DR(backward_seq)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *a, const DR_T *b, const DR_T *w,
                             const DR_T *ckpt, const DR_T *xs, const DR_T *go, DR_T *dq, DR_T *dk, DR_T *dv, DR_T *da,
                             DR_T *db, DR_T *dw, DR_T *St, DR_T *dS, DR_T *dx, DR_T *dxn, int L, int K, int V,
                             size_t sK, size_t sV, size_t sW, const int mode) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
#define TK(t) ((size_t)(t) * sK)
#define TV(t) ((size_t)(t) * sV)
#define TW(t) (w ? w + (size_t)(t) * sW : NULL)
#define DW(t) (dw ? dw + (size_t)(t) * sW : NULL)
    for (int c = nck - 1; c >= 0; c--) {
        const int t0 = c * CHUNK, steps = L - t0 < CHUNK ? L - t0 : CHUNK;
        memcpy(St, ckpt + (size_t)c * KV, sizeof(DR_T) * KV);
        for (int s = 0; s < steps; s++) {
            const int t = t0 + s;
            DR(step)(St + s * KV, St + (s + 1) * KV, NULL, xs + TV(t), NULL, k + TK(t), v + TV(t), a + TK(t), b + TK(t), TW(t),
                     mode, NULL, NULL, NULL, K, V);
        }
        for (int s = steps - 1; s >= 0; s--) {
            const int t = t0 + s;
            DR_T *swap = dx;
            dx = dxn, dxn = swap; /* dxn: token t + 1's dx */
            const DR_T *Sc = St + (s + 1) * KV, *Sp = St + s * KV;
            if (s == steps - 1)
                DR(pass)(1, 0, mode, dS, Sc, Sp, go + TV(t), v + TV(t), xs + TV(t), dv + TV(t), dx, NULL, q + TK(t), k + TK(t),
                         b + TK(t), dq + TK(t), dk + TK(t), db + TK(t), DW(t), NULL, NULL, NULL, K, V);
            else
                DR(pass)(1, 1, mode, dS, Sc, Sp, go + TV(t), v + TV(t), xs + TV(t), dv + TV(t), dx, dxn, q + TK(t), k + TK(t),
                         b + TK(t), dq + TK(t), dk + TK(t), db + TK(t), DW(t), a + TK(t + 1), TW(t + 1), da + TK(t + 1), K, V);
        }
        /* B of the chunk's first token, through its S_{t0 - 1} (the checkpoint) */
        DR(pass)(0, 1, mode, dS, St, NULL, NULL, NULL, NULL, NULL, NULL, dx, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                 a + TK(t0), TW(t0), da + TK(t0), K, V);
    }
#undef TK
#undef TV
#undef TW
#undef DW
}

/* All gradients are written (dw: NULL when w_mode is 0; ds0: NULL when not wanted); gs_final: the
   gradient of the final state, or NULL (zero). */
int DR(dr_backward)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *a, const DR_T *b, const DR_T *w,
                    const DR_T *ckpt, const DR_T *xs, const DR_T *go, const DR_T *gs_final, DR_T *dq, DR_T *dk, DR_T *dv,
                    DR_T *da, DR_T *db, DR_T *dw, DR_T *ds0, int B, int H, int L, int K, int V, int mode) {
    const size_t KV = (size_t)K * V;
    const int wn = mode == 2 ? K : mode, nck = dr_chunks(L, K, V);
    const size_t sK = (size_t)H * K, sV = (size_t)H * V, sW = (size_t)H * wn;
    /* states of one chunk (CHUNK + 1), the state's gradient, dx of two tokens */
    DR_T *buf = malloc(sizeof(DR_T) * ((CHUNK + 2) * KV + 2 * (size_t)V));
    if (!buf) return 1;
    DR_T *St = buf, *dS = buf + (CHUNK + 1) * KV, *dx = dS + KV, *dxn = dx + V;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H, nK = row * K, nV = row * V;
        if (gs_final)
            memcpy(dS, gs_final + n * KV, sizeof(DR_T) * KV);
        else
            memset(dS, 0, sizeof(DR_T) * KV);
        DR_T *dwq = dw ? dw + row * wn : NULL;
        const DR_T *wq = w ? w + row * wn : NULL;
#define BWD(m)                                                                                                                 \
    DR(backward_seq)(q + nK, k + nK, v + nV, a + nK, b + nK, wq, ckpt + (size_t)n * nck * KV, xs + nV, go + nV, dq + nK, \
                     dk + nK, dv + nV, da + nK, db + nK, dwq, St, dS, dx, dxn, L, K, VC, sK, sV, sW, m)
        /* the value dims of the suite's models as constants: the row loops unroll into registers */
#define BWD_V(m)    \
    if (FAST && V == 64) {  \
        enum { VC = 64 }; \
        BWD(m);     \
    } else if (FAST && V == 32) { \
        enum { VC = 32 }; \
        BWD(m);     \
    } else {        \
        const int VC = V; \
        BWD(m);     \
    }
        if (mode == 2) {
            BWD_V(2)
        } else if (mode == 1) {
            BWD_V(1)
        } else {
            BWD_V(0)
        }
#undef BWD_V
#undef BWD
        if (ds0) memcpy(ds0 + n * KV, dS, sizeof(DR_T) * KV);
    }
    free(buf);
    return 0;
}

/* ---- the delta rule (DeltaNet, Gated DeltaNet): the same recurrence with a = k, b = -alpha beta k, k' = beta k
   and one decay alpha per head, written as S_t = alpha_t S_{t-1} + k_t u_t^T, u_t = beta_t (v_t - alpha_t x_t),
   x_t = S_{t-1}^T k_t: a rank-one update by one vector u, so the backward has one vector (du) to gather
   where the general form has two. beta, alpha, dbeta, dalpha: (B, L, H); alpha NULL: no decay. us, xs:
   (B, L, H, V), the u_t and x_t, kept for the backward. */

/* x = S^T k, four rows at a time */
INLINE void DR(col_dot)(const DR_T *S, const DR_T *k, DR_T *restrict x, int K, int V) {
    int i;
    memset(x, 0, sizeof(DR_T) * V);
    for (i = 0; i + 3 < K; i += 4) {
        const DR_T k0 = k[i], k1 = k[i + 1], k2 = k[i + 2], k3 = k[i + 3];
        const DR_T *restrict s = S + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) x[j] += k0 * s[j] + k1 * s[V + j] + k2 * s[2 * V + j] + k3 * s[3 * V + j];
    }
    for (; i < K; i++) {
        const DR_T ki = k[i];
        const DR_T *restrict s = S + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) x[j] += ki * s[j];
    }
}

/* out = al S + k u^T (out may be S); o = out^T q unless o is NULL; with o, xn = out^T kn (the next step's x,
   saving it a pass over the state) unless kn is NULL; four rows at a time */
INLINE void DR(dl_update)(const DR_T *S, DR_T *out, const DR_T *k, const DR_T *u, const DR_T al, const DR_T *q,
                          DR_T *restrict o, const DR_T *kn, DR_T *restrict xn, int K, int V) {
    int i;
    if (o) memset(o, 0, sizeof(DR_T) * V);
    if (kn) memset(xn, 0, sizeof(DR_T) * V);
    for (i = 0; i + 3 < K; i += 4) {
        const DR_T k0 = k[i], k1 = k[i + 1], k2 = k[i + 2], k3 = k[i + 3];
        const DR_T *s = S + (size_t)i * V;
        DR_T *r = out + (size_t)i * V;
        if (o) {
            const DR_T q0 = q[i], q1 = q[i + 1], q2 = q[i + 2], q3 = q[i + 3];
            const DR_T n0 = kn ? kn[i] : 0, n1 = kn ? kn[i + 1] : 0, n2 = kn ? kn[i + 2] : 0, n3 = kn ? kn[i + 3] : 0;
            if (kn) {
#pragma omp simd
                for (int j = 0; j < V; j++) {
                    const DR_T uj = u[j];
                    const DR_T r0 = al * s[j] + k0 * uj, r1 = al * s[V + j] + k1 * uj;
                    const DR_T r2 = al * s[2 * V + j] + k2 * uj, r3 = al * s[3 * V + j] + k3 * uj;
                    r[j] = r0, r[V + j] = r1, r[2 * V + j] = r2, r[3 * V + j] = r3;
                    o[j] += q0 * r0 + q1 * r1 + q2 * r2 + q3 * r3;
                    xn[j] += n0 * r0 + n1 * r1 + n2 * r2 + n3 * r3;
                }
            } else {
#pragma omp simd
                for (int j = 0; j < V; j++) {
                    const DR_T uj = u[j];
                    const DR_T r0 = al * s[j] + k0 * uj, r1 = al * s[V + j] + k1 * uj;
                    const DR_T r2 = al * s[2 * V + j] + k2 * uj, r3 = al * s[3 * V + j] + k3 * uj;
                    r[j] = r0, r[V + j] = r1, r[2 * V + j] = r2, r[3 * V + j] = r3;
                    o[j] += q0 * r0 + q1 * r1 + q2 * r2 + q3 * r3;
                }
            }
        } else {
#pragma omp simd
            for (int j = 0; j < V; j++) {
                const DR_T uj = u[j];
                r[j] = al * s[j] + k0 * uj;
                r[V + j] = al * s[V + j] + k1 * uj;
                r[2 * V + j] = al * s[2 * V + j] + k2 * uj;
                r[3 * V + j] = al * s[3 * V + j] + k3 * uj;
            }
        }
    }
    for (; i < K; i++) {
        const DR_T ki = k[i], qi = o ? q[i] : 0, ni = kn ? kn[i] : 0;
        const DR_T *s = S + (size_t)i * V;
        DR_T *r = out + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) r[j] = al * s[j] + ki * u[j];
        if (o) {
#pragma omp simd
            for (int j = 0; j < V; j++) o[j] += qi * r[j];
        }
        if (kn) {
#pragma omp simd
            for (int j = 0; j < V; j++) xn[j] += ni * r[j];
        }
    }
}

INLINE void DR(dl_forward_seq)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *beta, const DR_T *alpha,
                               const DR_T *s0, DR_T *o, DR_T *ckpt, DR_T *us, DR_T *xs, DR_T *S, DR_T *buf, int L, int K,
                               int V, size_t sK, size_t sV, size_t sH) {
    const size_t KV = (size_t)K * V;
    if (s0)
        memcpy(S, s0, sizeof(DR_T) * KV);
    else
        memset(S, 0, sizeof(DR_T) * KV);
    DR_T *x = xs ? xs : buf;
    if (L > 0) DR(col_dot)(S, k, x, K, V);
    for (int t = 0; t < L; t++) {
        if (ckpt && t % CHUNK == 0) memcpy(ckpt + (size_t)(t / CHUNK) * KV, S, sizeof(DR_T) * KV);
        DR_T *u = us ? us + t * sV : buf + 2 * V;
        DR_T *xn = t + 1 == L ? x : xs ? xs + (t + 1) * sV : x == buf ? buf + V : buf;
        const DR_T al = alpha ? alpha[t * sH] : (DR_T)1, be = beta[t * sH], *vt = v + t * sV;
#pragma omp simd
        for (int j = 0; j < V; j++) u[j] = be * (vt[j] - al * x[j]);
        DR(dl_update)(S, S, k + t * sK, u, al, q + t * sK, o + t * sV, t + 1 < L ? k + (t + 1) * sK : NULL, xn, K, V);
        x = xn;
    }
}

int DR(dl_forward)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *beta, const DR_T *alpha, const DR_T *s0,
                   DR_T *o, DR_T *ckpt, DR_T *us, DR_T *xs, DR_T *s_final, int B, int H, int L, int K, int V) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
    DR_T *S = malloc(sizeof(DR_T) * (KV + 3 * (size_t)V));
    if (!S) return 1;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H, nK = row * K, nV = row * V;
        const DR_T *al = alpha ? alpha + row : NULL, *sq = s0 ? s0 + n * KV : NULL;
        DR_T *cq = ckpt ? ckpt + (size_t)n * nck * KV : NULL, *uq = us ? us + nV : NULL, *xq = xs ? xs + nV : NULL;
#define FWD(VC) \
    DR(dl_forward_seq)(q + nK, k + nK, v + nV, beta + row, al, sq, o + nV, cq, uq, xq, S, S + KV, L, K, VC, (size_t)H * K, (size_t)H * VC, H)
        if (FAST && V == 64)
            FWD(64);
        else if (FAST && V == 32)
            FWD(32);
        else
            FWD(V);
#undef FWD
        if (s_final) memcpy(s_final + n * KV, S, sizeof(DR_T) * KV);
    }
    free(S);
    return 0;
}

/* R (1 or 2) rows of the backward, their shared vectors loaded once. A (hasA), token t: dS += q g^T;
   dq = S_t g, dk = dS u, dalpha += <dS, S_{t-1}> (gated), du += dS^T k. B (hasB, first), token t + 1's part
   through x_{t+1} = S_t^T k_{t+1}: dk_{t+1} += S_t dxn, dS_t = alpha_{t+1} dS + k_{t+1} dxn^T. Sc: S_t's rows,
   Sp: S_{t-1}'s. */
INLINE void DR(dl_rows)(const int R, const int hasA, const int hasB, const int gated, DR_T *d, const DR_T *Sc, const DR_T *Sp,
                        const DR_T *g, const DR_T *u, DR_T *restrict du, const DR_T *dxn, const DR_T *qt, const DR_T *kt,
                        DR_T *dq, DR_T *dk, DR_T *dal_sum, const DR_T *kn, const DR_T aln, DR_T *dkn, int i, int V) {
    DR_T *restrict d0 = d + (size_t)(i + 0) * V;
    const DR_T *restrict c0 = Sc + (size_t)(i + 0) * V;
    const DR_T *restrict p0 = hasA && gated && R > 0 ? Sp + (size_t)(i + 0) * V : NULL;
    const DR_T q0 = hasA ? qt[i + 0] : 0, k0 = hasA ? kt[i + 0] : 0, n0 = hasB ? kn[i + 0] : 0;
    DR_T *restrict d1 = d + (size_t)(i + 1) * V;
    const DR_T *restrict c1 = Sc + (size_t)(i + 1) * V;
    const DR_T *restrict p1 = hasA && gated && R > 1 ? Sp + (size_t)(i + 1) * V : NULL;
    const DR_T q1 = R > 1 && hasA ? qt[i + 1] : 0, k1 = R > 1 && hasA ? kt[i + 1] : 0, n1 = R > 1 && hasB ? kn[i + 1] : 0;
    DR_T gq0 = 0, gk0 = 0, gw0 = 0, ga0 = 0, gq1 = 0, gk1 = 0, gw1 = 0, ga1 = 0;
#pragma omp simd reduction(+ : gq0, gk0, gw0, ga0, gq1, gk1, gw1, ga1)
    for (int j = 0; j < V; j++) {
        const DR_T dxj = hasB ? dxn[j] : 0, gj = hasA ? g[j] : 0, uj = hasA ? u[j] : 0;
        DR_T duj = 0;
        {
            DR_T e = d0[j];
            const DR_T sv = c0[j];
            if (hasB) {
                ga0 += sv * dxj;
                e = aln * e + n0 * dxj;
            }
            if (hasA) {
                e += q0 * gj;
                gq0 += sv * gj;
                gk0 += e * uj;
                if (gated) gw0 += e * p0[j];
                duj += k0 * e;
            }
            d0[j] = e;
        }
        if (R > 1) {
            DR_T e = d1[j];
            const DR_T sv = c1[j];
            if (hasB) {
                ga1 += sv * dxj;
                e = aln * e + n1 * dxj;
            }
            if (hasA) {
                e += q1 * gj;
                gq1 += sv * gj;
                gk1 += e * uj;
                if (gated) gw1 += e * p1[j];
                duj += k1 * e;
            }
            d1[j] = e;
        }
        if (hasA) du[j] += duj;
    }
    {
        if (hasB) dkn[i + 0] += ga0;
        if (hasA) dq[i + 0] = gq0, dk[i + 0] = gk0, *dal_sum += gw0;
    }
    if (R > 1) {
        if (hasB) dkn[i + 1] += ga1;
        if (hasA) dq[i + 1] = gq1, dk[i + 1] = gk1, *dal_sum += gw1;
    }
}

INLINE void DR(dl_pass)(const int hasA, const int hasB, const int gated, DR_T *d, const DR_T *Sc, const DR_T *Sp,
                        const DR_T *g, const DR_T *u, DR_T *du, const DR_T *dxn, const DR_T *qt, const DR_T *kt, DR_T *dq,
                        DR_T *dk, DR_T *dal_sum, const DR_T *kn, const DR_T aln, DR_T *dkn, int K, int V) {
    if (hasA) memset(du, 0, sizeof(DR_T) * V);
    int i = 0;
    for (; i + 1 < K; i += 2)
        DR(dl_rows)(2, hasA, hasB, gated, d, Sc, Sp, g, u, du, dxn, qt, kt, dq, dk, dal_sum, kn, aln, dkn, i, V);
    for (; i < K; i++) DR(dl_rows)(1, hasA, hasB, gated, d, Sc, Sp, g, u, du, dxn, qt, kt, dq, dk, dal_sum, kn, aln, dkn, i, V);
}

INLINE void DR(dl_backward_seq)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *beta, const DR_T *alpha,
                                const DR_T *ckpt, const DR_T *us, const DR_T *xs, const DR_T *go, DR_T *dq, DR_T *dk,
                                DR_T *dv, DR_T *dbeta, DR_T *dalpha, DR_T *St, DR_T *dS, DR_T *du, DR_T *dx, DR_T *dxn,
                                int L, int K, int V, size_t sK, size_t sV, size_t sH, const int gated) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
#define AL(t) (gated ? alpha[(size_t)(t) * sH] : (DR_T)1)
    for (int c = nck - 1; c >= 0; c--) {
        const int t0 = c * CHUNK, steps = L - t0 < CHUNK ? L - t0 : CHUNK;
        memcpy(St, ckpt + (size_t)c * KV, sizeof(DR_T) * KV);
        for (int s = 0; s < steps; s++)
            DR(dl_update)(St + s * KV, St + (s + 1) * KV, k + (t0 + s) * sK, us + (t0 + s) * sV, AL(t0 + s), NULL, NULL, NULL,
                          NULL, K, V);
        for (int s = steps - 1; s >= 0; s--) {
            const int t = t0 + s;
            DR_T *swap = dx;
            dx = dxn, dxn = swap; /* dxn: token t + 1's dx */
            const DR_T *Sc = St + (s + 1) * KV, *Sp = St + s * KV, *g = go + t * sV, *u = us + t * sV;
            DR_T dal = 0;
            if (s == steps - 1)
                DR(dl_pass)(1, 0, gated, dS, Sc, Sp, g, u, du, NULL, q + t * sK, k + t * sK, dq + t * sK, dk + t * sK, &dal, NULL,
                            0, NULL, K, V);
            else
                DR(dl_pass)(1, 1, gated, dS, Sc, Sp, g, u, du, dxn, q + t * sK, k + t * sK, dq + t * sK, dk + t * sK, &dal,
                            k + (t + 1) * sK, AL(t + 1), dk + (t + 1) * sK, K, V);
            /* through u = beta (v - alpha x) */
            const DR_T al = AL(t), be = beta[t * sH], *vt = v + t * sV, *x = xs + t * sV;
            DR_T *dvt = dv + t * sV, gb = 0, gx = 0;
#pragma omp simd reduction(+ : gb, gx)
            for (int j = 0; j < V; j++) {
                dvt[j] = be * du[j];
                gb += du[j] * (vt[j] - al * x[j]);
                gx += du[j] * x[j];
                dx[j] = -al * be * du[j];
            }
            dbeta[t * sH] = gb;
            if (gated) dalpha[t * sH] = dal - be * gx;
        }
        /* B of the chunk's first token, through its S_{t0 - 1} (the checkpoint) */
        DR(dl_pass)(0, 1, gated, dS, St, NULL, NULL, NULL, NULL, dx, NULL, NULL, NULL, NULL, NULL, k + t0 * sK, AL(t0),
                    dk + t0 * sK, K, V);
    }
#undef AL
}

int DR(dl_backward)(const DR_T *q, const DR_T *k, const DR_T *v, const DR_T *beta, const DR_T *alpha, const DR_T *ckpt,
                    const DR_T *us, const DR_T *xs, const DR_T *go, const DR_T *gs_final, DR_T *dq, DR_T *dk, DR_T *dv,
                    DR_T *dbeta, DR_T *dalpha, DR_T *ds0, int B, int H, int L, int K, int V) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
    DR_T *buf = malloc(sizeof(DR_T) * ((CHUNK + 2) * KV + 3 * (size_t)V));
    if (!buf) return 1;
    DR_T *St = buf, *dS = buf + (CHUNK + 1) * KV, *du = dS + KV, *dx = du + V, *dxn = dx + V;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H, nK = row * K, nV = row * V;
        if (gs_final)
            memcpy(dS, gs_final + n * KV, sizeof(DR_T) * KV);
        else
            memset(dS, 0, sizeof(DR_T) * KV);
#define BWD(VC, G)                                                                                                              \
    DR(dl_backward_seq)(q + nK, k + nK, v + nV, beta + row, G ? alpha + row : NULL, ckpt + (size_t)n * nck * KV, us + nV, \
                        xs + nV, go + nV, dq + nK, dk + nK, dv + nV, dbeta + row, G ? dalpha + row : NULL, St, dS, du, dx,  \
                        dxn, L, K, VC, (size_t)H * K, (size_t)H * VC, H, G)
#define BWD_V(G)        \
    if (FAST && V == 64)        \
        BWD(64, G);     \
    else if (FAST && V == 32)   \
        BWD(32, G);     \
    else                \
        BWD(V, G);
        if (alpha) {
            BWD_V(1)
        } else {
            BWD_V(0)
        }
#undef BWD_V
#undef BWD
        if (ds0) memcpy(ds0 + n * KV, dS, sizeof(DR_T) * KV);
    }
    free(buf);
    return 0;
}

/* ---- the readout of DeltaNet and Gated DeltaNet: y = RMSNorm(x) * w (* SiLU(z)), per row of V values,
   r = (mean(x^2) + eps)^-1/2; one pass forward and one back where PyTorch's composite takes a dozen.
   x, z, sg (sigmoid(z), from the caller: vectorized there), y, gy, gx, gz: (rows, V); w, gw: (V); z NULL: no
   gate; r: (rows), kept for the backward. */

int DR(norm_forward)(const DR_T *x, const DR_T *w, const DR_T *z, const DR_T *sg, DR_T *y, DR_T *r, int rows, int V,
                     double eps) {
    for (int n = 0; n < rows; n++) {
        const DR_T *xr = x + (size_t)n * V;
        DR_T *yr = y + (size_t)n * V, ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < V; j++) ss += xr[j] * xr[j];
        const DR_T rn = (DR_T)(1 / sqrt((double)(ss / V) + eps));
        r[n] = rn;
        if (z) {
            const DR_T *zr = z + (size_t)n * V, *sr = sg + (size_t)n * V;
#pragma omp simd
            for (int j = 0; j < V; j++) yr[j] = xr[j] * rn * w[j] * (zr[j] * sr[j]);
        } else {
#pragma omp simd
            for (int j = 0; j < V; j++) yr[j] = xr[j] * rn * w[j];
        }
    }
    return 0;
}

/* gw is accumulated into (the caller zeroes it) */
int DR(norm_backward)(const DR_T *x, const DR_T *w, const DR_T *z, const DR_T *sg, const DR_T *r, const DR_T *gy, DR_T *gx,
                      DR_T *gw, DR_T *gz, int rows, int V) {
    for (int n = 0; n < rows; n++) {
        const DR_T *xr = x + (size_t)n * V, *g = gy + (size_t)n * V, rn = r[n];
        DR_T *restrict dx = gx + (size_t)n * V, dot = 0;
        if (z) {
            const DR_T *zr = z + (size_t)n * V, *sr = sg + (size_t)n * V;
            DR_T *restrict dz = gz + (size_t)n * V;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < V; j++) {
                const DR_T s = sr[j], act = zr[j] * s, nj = xr[j] * rn, gn = g[j] * w[j] * act;
                gw[j] += g[j] * nj * act;
                dz[j] = g[j] * nj * w[j] * s * ((DR_T)1 + zr[j] * ((DR_T)1 - s));
                dx[j] = gn;
                dot += gn * nj;
            }
        } else {
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < V; j++) {
                const DR_T nj = xr[j] * rn, gn = g[j] * w[j];
                gw[j] += g[j] * nj;
                dx[j] = gn;
                dot += gn * nj;
            }
        }
        dot /= V;
#pragma omp simd
        for (int j = 0; j < V; j++) dx[j] = rn * (dx[j] - xr[j] * rn * dot);
    }
    return 0;
}

/* ---- RWKV-7's readout: y = (LayerNorm(o) w + c + (sum_j r_j k_j rk_j) v) * g per head (a GroupNorm with a
   group per head is a layer norm over the head's d values), one pass each way where PyTorch takes a dozen ops.
   o, r, k, v, g, y and their gradients: (rows, d), row n of head n % H; w, c (the norm's weight and bias), rk:
   (H, d); stats: (rows, 3): mean, 1/std, bonus. dw, dc, drk are accumulated into (the caller zeroes them). */

int DR(rk_readout_forward)(const DR_T *o, const DR_T *r, const DR_T *k, const DR_T *v, const DR_T *g, const DR_T *w,
                           const DR_T *c, const DR_T *rk, DR_T *y, DR_T *stats, int rows, int H, int d, double eps) {
    for (int n = 0; n < rows; n++) {
        const size_t off = (size_t)n * d, hd = (size_t)(n % H) * d;
        const DR_T *on = o + off, *rn = r + off, *kn = k + off, *vn = v + off, *gn = g + off;
        const DR_T *wh = w + hd, *ch = c + hd, *rkh = rk + hd;
        DR_T *yn = y + off, sum = 0, bonus = 0, var = 0;
#pragma omp simd reduction(+ : sum, bonus)
        for (int j = 0; j < d; j++) {
            sum += on[j];
            bonus += rn[j] * kn[j] * rkh[j];
        }
        const DR_T mean = sum / d;
#pragma omp simd reduction(+ : var)
        for (int j = 0; j < d; j++) var += (on[j] - mean) * (on[j] - mean);
        const DR_T rs = (DR_T)(1 / sqrt((double)(var / d) + eps));
#pragma omp simd
        for (int j = 0; j < d; j++) yn[j] = ((on[j] - mean) * rs * wh[j] + ch[j] + bonus * vn[j]) * gn[j];
        stats[3 * (size_t)n] = mean, stats[3 * (size_t)n + 1] = rs, stats[3 * (size_t)n + 2] = bonus;
    }
    return 0;
}

int DR(rk_readout_backward)(const DR_T *o, const DR_T *r, const DR_T *k, const DR_T *v, const DR_T *g, const DR_T *w,
                            const DR_T *c, const DR_T *rk, const DR_T *stats, const DR_T *gy, DR_T *dout, DR_T *dr, DR_T *dk,
                            DR_T *dv, DR_T *dg, DR_T *dw, DR_T *dc, DR_T *drk, int rows, int H, int d) {
    for (int n = 0; n < rows; n++) {
        const size_t off = (size_t)n * d, hd = (size_t)(n % H) * d;
        const DR_T *on = o + off, *rn = r + off, *kn = k + off, *vn = v + off, *gn = g + off, *gyn = gy + off;
        const DR_T *wh = w + hd, *ch = c + hd, *rkh = rk + hd;
        DR_T *restrict don = dout + off, *restrict dgn = dg + off, *restrict dvn = dv + off, *restrict dwh = dw + hd;
        DR_T *restrict dch = dc + hd;
        const DR_T mean = stats[3 * (size_t)n], rs = stats[3 * (size_t)n + 1], bonus = stats[3 * (size_t)n + 2];
        DR_T dbonus = 0, sdn = 0, sdnn = 0;
#pragma omp simd reduction(+ : dbonus, sdn, sdnn)
        for (int j = 0; j < d; j++) {
            const DR_T nj = (on[j] - mean) * rs, gl = gyn[j] * gn[j], dn = gl * wh[j];
            dgn[j] = gyn[j] * (nj * wh[j] + ch[j] + bonus * vn[j]);
            dwh[j] += gl * nj;
            dch[j] += gl;
            dbonus += gl * vn[j];
            dvn[j] = gl * bonus;
            don[j] = dn;
            sdn += dn;
            sdnn += dn * nj;
        }
        sdn /= d, sdnn /= d;
        DR_T *restrict drn = dr + off, *restrict dkn = dk + off, *restrict drkh = drk + hd;
#pragma omp simd
        for (int j = 0; j < d; j++) {
            don[j] = rs * (don[j] - sdn - (on[j] - mean) * rs * sdnn);
            drn[j] = dbonus * kn[j] * rkh[j];
            dkn[j] = dbonus * rn[j] * rkh[j];
            drkh[j] += dbonus * rn[j] * kn[j];
        }
    }
    return 0;
}

/* ---- x / max(|x|, eps) (* scale) per row of K values (F.normalize's map), one pass each way. Rows of a
   (tokens, G, K) view whose tokens lie ts apart (the q and k heads inside a projection's output); the first
   `scaled` of each token's G rows are multiplied by `scale` (the queries' d_k^-1/2). y, gy, gx: (tokens, G, K),
   contiguous; r: (tokens * G), 1 / max(|x|, eps), kept for the backward (negative: clamped at eps). */

int DR(l2n_forward)(const DR_T *x, DR_T *y, DR_T *r, int tokens, int G, long ts, int K, double eps, int scaled, double scale) {
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < G; h++) {
            const DR_T *xr = x + (size_t)t * ts + (size_t)h * K;
            DR_T *yr = y + ((size_t)t * G + h) * K, ss = 0;
#pragma omp simd reduction(+ : ss)
            for (int j = 0; j < K; j++) ss += xr[j] * xr[j];
            const int clamped = !((double)ss >= eps * eps); /* as clamp_min: |x| = eps is not clamped */
            const DR_T rn = clamped ? (DR_T)(1 / eps) : (DR_T)(1 / sqrt((double)ss));
            const DR_T m = rn * (h < scaled ? (DR_T)scale : (DR_T)1);
            r[(size_t)t * G + h] = clamped ? -rn : rn;
#pragma omp simd
            for (int j = 0; j < K; j++) yr[j] = xr[j] * m;
        }
    return 0;
}

int DR(l2n_backward)(const DR_T *x, const DR_T *r, const DR_T *gy, DR_T *gx, int tokens, int G, long ts, int K, int scaled,
                     double scale) {
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < G; h++) {
            const size_t row = (size_t)t * G + h;
            const DR_T *xr = x + (size_t)t * ts + (size_t)h * K, *g = gy + row * K;
            DR_T *restrict dx = gx + row * K;
            const DR_T rn = r[row] < 0 ? -r[row] : r[row], sc = h < scaled ? (DR_T)scale : (DR_T)1;
            if (r[row] < 0) { /* below eps the map is linear: x / eps */
#pragma omp simd
                for (int j = 0; j < K; j++) dx[j] = g[j] * sc * rn;
                continue;
            }
            DR_T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < K; j++) dot += g[j] * xr[j];
            dot *= rn * rn; /* (g . x^) / |x|, x^ = x / |x| */
#pragma omp simd
            for (int j = 0; j < K; j++) dx[j] = sc * rn * (g[j] - xr[j] * dot);
        }
    return 0;
}

#endif

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

#ifndef T

#include <math.h>

#include "state_kernels.h"

int dr_chunks(int L, int K, int V) { return chunks(L, K, V); }

#define BODY "delta_rule.c"
#include "instantiate.h"

#else

#include "state_kernels.h" /* its part per scalar type */

/* the value dims of the suite's models (IF_V: state_kernels.h) */
#define DISPATCH_V(CALL, arg) IF_V(64, CALL, arg) IF_V(32, CALL, arg) ELSE_V(CALL, arg)
#define SEQ_V(arg) DISPATCH_V(SEQ, arg) /* SEQ(arg): the caller's call of its per-sequence body */

/* S = s0, or 0 when s0 is NULL */
INLINE void FN(set_state)(T *S, const T *s0, size_t KV) {
    if (s0)
        memcpy(S, s0, sizeof(T) * KV);
    else
        memset(S, 0, sizeof(T) * KV);
}

/* x = S^T k, four rows at a time */
INLINE void FN(col_dot)(const T *S, const T *k, T *restrict x, int K, int V) {
    int i;
    memset(x, 0, sizeof(T) * V);
    for (i = 0; i + 3 < K; i += 4) {
        const T k0 = k[i], k1 = k[i + 1], k2 = k[i + 2], k3 = k[i + 3];
        const T *restrict s = S + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) x[j] += k0 * s[j] + k1 * s[V + j] + k2 * s[2 * V + j] + k3 * s[3 * V + j];
    }
    for (; i < K; i++) {
        const T ki = k[i];
        const T *restrict s = S + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) x[j] += ki * s[j];
    }
}

/* x = S^T a (x: NULL when given in xin); out = diag(w) S + b x^T + k v^T (out may be S); o = out^T q (o may be
   NULL), and with o, xn = out^T an (the next step's x) unless an is NULL. Four rows at a time, so that x, v
   and o are loaded once for four rows. */
INLINE void FN(step)(const T *S, T *out, T *restrict x, const T *xin, const T *q, const T *k,
                     const T *v, const T *a, const T *b, const T *w, const int mode, T *restrict o,
                     const T *an, T *restrict xn, int K, int V) {
    int i;
    if (x) {
        FN(col_dot)(S, a, x, K, V);
        xin = x;
    }
    if (o) memset(o, 0, sizeof(T) * V);
    if (an) memset(xn, 0, sizeof(T) * V);
    for (i = 0; i + 3 < K; i += 4) {
        T wr[4], br[4], kr[4], qr[4], nr[4];
        for (int r = 0; r < 4; r++) {
            wr[r] = FN(decay)(w, mode, i + r), br[r] = b[i + r], kr[r] = k[i + r], qr[r] = o ? q[i + r] : 0;
            nr[r] = an ? an[i + r] : 0;
        }
        const T *s = S + (size_t)i * V;
        T *u = out + (size_t)i * V;
/* the four rows' new values and their share of o, and with N of xn */
#define ROWS4_O(N)                                                                                            \
    _Pragma("omp simd") for (int j = 0; j < V; j++) {                                                        \
        const T xj = xin[j], vj = v[j];                                                                       \
        const T r0 = wr[0] * s[j] + br[0] * xj + kr[0] * vj, r1 = wr[1] * s[V + j] + br[1] * xj + kr[1] * vj; \
        const T r2 = wr[2] * s[2 * V + j] + br[2] * xj + kr[2] * vj;                                          \
        const T r3 = wr[3] * s[3 * V + j] + br[3] * xj + kr[3] * vj;                                          \
        u[j] = r0, u[V + j] = r1, u[2 * V + j] = r2, u[3 * V + j] = r3;                                       \
        o[j] += qr[0] * r0 + qr[1] * r1 + qr[2] * r2 + qr[3] * r3;                                            \
        if (N) xn[j] += nr[0] * r0 + nr[1] * r1 + nr[2] * r2 + nr[3] * r3;                                    \
    }
        if (o && an) { /* and the next step's x = out^T a_{t+1}, saving it a pass over the state */
            ROWS4_O(1)
        } else if (o) {
            ROWS4_O(0)
        } else {
#pragma omp simd
            for (int j = 0; j < V; j++) {
                const T xj = xin[j], vj = v[j];
                u[j] = wr[0] * s[j] + br[0] * xj + kr[0] * vj;
                u[V + j] = wr[1] * s[V + j] + br[1] * xj + kr[1] * vj;
                u[2 * V + j] = wr[2] * s[2 * V + j] + br[2] * xj + kr[2] * vj;
                u[3 * V + j] = wr[3] * s[3 * V + j] + br[3] * xj + kr[3] * vj;
            }
        }
#undef ROWS4_O
    }
    for (; i < K; i++) {
        const T wi = FN(decay)(w, mode, i), bi = b[i], ki = k[i], qi = o ? q[i] : 0, ni = an ? an[i] : 0;
        const T *s = S + (size_t)i * V;
        T *u = out + (size_t)i * V;
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

INLINE void FN(forward_seq)(const T *q, const T *k, const T *v, const T *a, const T *b, const T *w,
                            const T *s0, T *o, T *ckpt, T *xs, T *S, T *x, int L, int K, int V,
                            size_t sK, size_t sV, size_t sW, const int mode) {
    const size_t KV = (size_t)K * V;
    FN(set_state)(S, s0, KV);
    T *xt = xs ? xs : x; /* x_t: computed by step t - 1 (x_0 by step 0 itself); x: two buffers */
    for (int t = 0; t < L; t++) {
        if (ckpt && t % CHUNK == 0) memcpy(ckpt + (size_t)(t / CHUNK) * KV, S, sizeof(T) * KV);
        T *xn = t + 1 == L ? xt : xs ? xs + (t + 1) * sV : xt == x ? x + V : x;
        FN(step)(S, S, t == 0 ? xt : NULL, xt, q + t * sK, k + t * sK, v + t * sV, a + t * sK, b + t * sK,
                 w ? w + t * sW : NULL, mode, o + t * sV, t + 1 < L ? a + (t + 1) * sK : NULL, xn, K, V);
        xt = xn;
    }
}

/* xs: (B, L, H, V), the x_t's, kept for the backward (NULL with ckpt when no gradient is wanted) */
int FN(dr_forward)(const T *q, const T *k, const T *v, const T *a, const T *b, const T *w,
                   const T *s0, T *o, T *ckpt, T *xs, T *s_final, int B, int H, int L, int K, int V, int mode) {
    const size_t KV = (size_t)K * V;
    const int wn = mode == 2 ? K : mode, nck = dr_chunks(L, K, V);
    const size_t sK = (size_t)H * K, sV = (size_t)H * V, sW = (size_t)H * wn;
    T *S = malloc(sizeof(T) * (KV + 2 * (size_t)V));
    if (!S) return 1;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H; /* (batch, head)'s first token in (B, L, H, .) */
        const size_t nK = row * K, nV = row * V;
        const T *wq = w ? w + row * wn : NULL, *sq = s0 ? s0 + n * KV : NULL;
        T *cq = ckpt ? ckpt + (size_t)n * nck * KV : NULL, *xq = xs ? xs + nV : NULL;
#define SEQ(m) FN(forward_seq)(q + nK, k + nK, v + nV, a + nK, b + nK, wq, sq, o + nV, cq, xq, S, S + KV, L, K, VC, sK, sV, sW, m)
        DISPATCH_MODE(SEQ_V)
#undef SEQ
        if (s_final) memcpy(s_final + n * KV, S, sizeof(T) * KV);
    }
    free(S);
    return 0;
}

/* The backward through R (1 or 2) rows of the state at once, the rows' shared vectors loaded once.
   A (hasA): token t, dS += q g^T, then the gradients through S_t = diag(w) S_{t-1} + b x^T + k v^T:
   dq = S_t g, dk = dS v, db = dS x, dw = diag(dS S_{t-1}^T), dv += dS^T k, dx += dS^T b.
   B (hasB, done first on the same rows): token t + 1's last part, through x_{t+1} = S_t^T a_{t+1}:
   da_{t+1} = S_t dxn, dS_t = diag(w_{t+1}) dS + a_{t+1} dxn^T. Sc: S_t's rows (B's S_t too), Sp: S_{t-1}'s. */
INLINE void FN(rows)(const int R, const int hasA, const int hasB, const int mode, T *d, const T *Sc, const T *Sp,
                     const T *g, const T *v, const T *x, T *restrict dv, T *restrict dx, const T *dxn,
                     const T *qt, const T *kt, const T *bt, T *dq, T *dk, T *db, T *dwt, T *dw_sum,
                     const T *an, const T *wn_, T *dan, int i, int V) {
    T *restrict d0 = d + (size_t)i * V, *restrict d1 = d0 + V;
    const T *restrict c0 = Sc + (size_t)i * V, *restrict c1 = c0 + V;
    const T *restrict p0 = hasA ? Sp + (size_t)i * V : NULL, *restrict p1 = hasA ? p0 + V : NULL;
    const T q0 = hasA ? qt[i] : 0, k0 = hasA ? kt[i] : 0, b0 = hasA ? bt[i] : 0;
    const T q1 = hasA && R == 2 ? qt[i + 1] : 0, k1 = hasA && R == 2 ? kt[i + 1] : 0, b1 = hasA && R == 2 ? bt[i + 1] : 0;
    const T a0 = hasB ? an[i] : 0, w0 = hasB ? FN(decay)(wn_, mode, i) : 0;
    const T a1 = hasB && R == 2 ? an[i + 1] : 0, w1 = hasB && R == 2 ? FN(decay)(wn_, mode, i + 1) : 0;
    T gq0 = 0, gk0 = 0, gb0 = 0, gw0 = 0, ga0 = 0, gq1 = 0, gk1 = 0, gb1 = 0, gw1 = 0, ga1 = 0;
#pragma omp simd reduction(+ : gq0, gk0, gb0, gw0, ga0, gq1, gk1, gb1, gw1, ga1)
    for (int j = 0; j < V; j++) {
        T e0 = d0[j], e1 = R == 2 ? d1[j] : 0;
        const T s0 = c0[j], s1 = R == 2 ? c1[j] : 0;
        if (hasB) {
            const T dxj = dxn[j];
            ga0 += s0 * dxj;
            e0 = w0 * e0 + a0 * dxj;
            if (R == 2) {
                ga1 += s1 * dxj;
                e1 = w1 * e1 + a1 * dxj;
            }
        }
        if (hasA) {
            const T gj = g[j], vj = v[j], xj = x[j];
            e0 += q0 * gj;
            gq0 += s0 * gj;
            gk0 += e0 * vj;
            gb0 += e0 * xj;
            if (mode) gw0 += e0 * p0[j];
            T dvj = k0 * e0, dxj = b0 * e0;
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
INLINE void FN(pass)(const int hasA, const int hasB, const int mode, T *d, const T *Sc, const T *Sp, const T *g,
                     const T *v, const T *x, T *dv, T *dx, const T *dxn, const T *qt, const T *kt,
                     const T *bt, T *dq, T *dk, T *db, T *dwt, const T *an, const T *wn_, T *dan,
                     int K, int V) {
    T dw_sum = 0;
    if (hasA) {
        memset(dv, 0, sizeof(T) * V);
        memset(dx, 0, sizeof(T) * V);
    }
    int i = 0;
    for (; i + 1 < K; i += 2)
        FN(rows)(2, hasA, hasB, mode, d, Sc, Sp, g, v, x, dv, dx, dxn, qt, kt, bt, dq, dk, db, dwt, &dw_sum, an, wn_, dan, i, V);
    if (i < K)
        FN(rows)(1, hasA, hasB, mode, d, Sc, Sp, g, v, x, dv, dx, dxn, qt, kt, bt, dq, dk, db, dwt, &dw_sum, an, wn_, dan, i, V);
    if (hasA && mode == 1) dwt[0] = dw_sum;
}

INLINE void FN(backward_seq)(const T *q, const T *k, const T *v, const T *a, const T *b, const T *w,
                             const T *ckpt, const T *xs, const T *go, T *dq, T *dk, T *dv, T *da,
                             T *db, T *dw, T *St, T *dS, T *dx, T *dxn, int L, int K, int V,
                             size_t sK, size_t sV, size_t sW, const int mode) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
#define TK(t) ((size_t)(t) * sK)
#define TV(t) ((size_t)(t) * sV)
#define TW(t) (w ? w + (size_t)(t) * sW : NULL)
#define DW(t) (dw ? dw + (size_t)(t) * sW : NULL)
    for (int c = nck - 1; c >= 0; c--) {
        const int t0 = c * CHUNK, steps = L - t0 < CHUNK ? L - t0 : CHUNK;
        memcpy(St, ckpt + (size_t)c * KV, sizeof(T) * KV);
        for (int s = 0; s < steps; s++) {
            const int t = t0 + s;
            FN(step)(St + s * KV, St + (s + 1) * KV, NULL, xs + TV(t), NULL, k + TK(t), v + TV(t), a + TK(t), b + TK(t), TW(t),
                     mode, NULL, NULL, NULL, K, V);
        }
        for (int s = steps - 1; s >= 0; s--) {
            const int t = t0 + s;
            T *swap = dx;
            dx = dxn, dxn = swap; /* dxn: token t + 1's dx */
            const T *Sc = St + (s + 1) * KV, *Sp = St + s * KV;
            if (s == steps - 1)
                FN(pass)(1, 0, mode, dS, Sc, Sp, go + TV(t), v + TV(t), xs + TV(t), dv + TV(t), dx, NULL, q + TK(t), k + TK(t),
                         b + TK(t), dq + TK(t), dk + TK(t), db + TK(t), DW(t), NULL, NULL, NULL, K, V);
            else
                FN(pass)(1, 1, mode, dS, Sc, Sp, go + TV(t), v + TV(t), xs + TV(t), dv + TV(t), dx, dxn, q + TK(t), k + TK(t),
                         b + TK(t), dq + TK(t), dk + TK(t), db + TK(t), DW(t), a + TK(t + 1), TW(t + 1), da + TK(t + 1), K, V);
        }
        /* B of the chunk's first token, through its S_{t0 - 1} (the checkpoint) */
        FN(pass)(0, 1, mode, dS, St, NULL, NULL, NULL, NULL, NULL, NULL, dx, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                 a + TK(t0), TW(t0), da + TK(t0), K, V);
    }
#undef TK
#undef TV
#undef TW
#undef DW
}

/* All gradients are written (dw: NULL when w_mode is 0; ds0: NULL when not wanted); gs_final: the
   gradient of the final state, or NULL (zero). */
int FN(dr_backward)(const T *q, const T *k, const T *v, const T *a, const T *b, const T *w,
                    const T *ckpt, const T *xs, const T *go, const T *gs_final, T *dq, T *dk, T *dv,
                    T *da, T *db, T *dw, T *ds0, int B, int H, int L, int K, int V, int mode) {
    const size_t KV = (size_t)K * V;
    const int wn = mode == 2 ? K : mode, nck = dr_chunks(L, K, V);
    const size_t sK = (size_t)H * K, sV = (size_t)H * V, sW = (size_t)H * wn;
    /* states of one chunk (CHUNK + 1), the state's gradient, dx of two tokens */
    T *buf = malloc(sizeof(T) * ((CHUNK + 2) * KV + 2 * (size_t)V));
    if (!buf) return 1;
    T *St = buf, *dS = buf + (CHUNK + 1) * KV, *dx = dS + KV, *dxn = dx + V;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H, nK = row * K, nV = row * V;
        FN(set_state)(dS, gs_final ? gs_final + n * KV : NULL, KV);
        T *dwq = dw ? dw + row * wn : NULL;
        const T *wq = w ? w + row * wn : NULL;
#define SEQ(m)                                                                                                                 \
    FN(backward_seq)(q + nK, k + nK, v + nV, a + nK, b + nK, wq, ckpt + (size_t)n * nck * KV, xs + nV, go + nV, dq + nK, \
                     dk + nK, dv + nV, da + nK, db + nK, dwq, St, dS, dx, dxn, L, K, VC, sK, sV, sW, m)
        DISPATCH_MODE(SEQ_V)
#undef SEQ
        if (ds0) memcpy(ds0 + n * KV, dS, sizeof(T) * KV);
    }
    free(buf);
    return 0;
}

/* ---- the delta rule (DeltaNet, Gated DeltaNet): the same recurrence with a = k, b = -alpha beta k, k' = beta k
   and one decay alpha per head, written as S_t = alpha_t S_{t-1} + k_t u_t^T, u_t = beta_t (v_t - alpha_t x_t),
   x_t = S_{t-1}^T k_t: a rank-one update by one vector u, so the backward has one vector (du) to gather
   where the general form has two. beta, alpha, dbeta, dalpha: (B, L, H); alpha NULL: no decay. us, xs:
   (B, L, H, V), the u_t and x_t, kept for the backward. */

/* out = al S + k u^T (out may be S); o = out^T q unless o is NULL; with o, xn = out^T kn (the next step's x,
   saving it a pass over the state) unless kn is NULL; four rows at a time */
INLINE void FN(dl_update)(const T *S, T *out, const T *k, const T *u, const T al, const T *q,
                          T *restrict o, const T *kn, T *restrict xn, int K, int V) {
    int i;
    if (o) memset(o, 0, sizeof(T) * V);
    if (kn) memset(xn, 0, sizeof(T) * V);
    for (i = 0; i + 3 < K; i += 4) {
        const T k0 = k[i], k1 = k[i + 1], k2 = k[i + 2], k3 = k[i + 3];
        const T *s = S + (size_t)i * V;
        T *r = out + (size_t)i * V;
        if (o) {
            const T q0 = q[i], q1 = q[i + 1], q2 = q[i + 2], q3 = q[i + 3];
            const T n0 = kn ? kn[i] : 0, n1 = kn ? kn[i + 1] : 0, n2 = kn ? kn[i + 2] : 0, n3 = kn ? kn[i + 3] : 0;
/* the four rows' new values and their share of o, and with N of xn */
#define ROWS4_O(N)                                                                   \
    _Pragma("omp simd") for (int j = 0; j < V; j++) {                               \
        const T uj = u[j];                                                           \
        const T r0 = al * s[j] + k0 * uj, r1 = al * s[V + j] + k1 * uj;              \
        const T r2 = al * s[2 * V + j] + k2 * uj, r3 = al * s[3 * V + j] + k3 * uj;  \
        r[j] = r0, r[V + j] = r1, r[2 * V + j] = r2, r[3 * V + j] = r3;              \
        o[j] += q0 * r0 + q1 * r1 + q2 * r2 + q3 * r3;                               \
        if (N) xn[j] += n0 * r0 + n1 * r1 + n2 * r2 + n3 * r3;                       \
    }
            if (kn) {
                ROWS4_O(1)
            } else {
                ROWS4_O(0)
            }
#undef ROWS4_O
        } else {
#pragma omp simd
            for (int j = 0; j < V; j++) {
                const T uj = u[j];
                r[j] = al * s[j] + k0 * uj;
                r[V + j] = al * s[V + j] + k1 * uj;
                r[2 * V + j] = al * s[2 * V + j] + k2 * uj;
                r[3 * V + j] = al * s[3 * V + j] + k3 * uj;
            }
        }
    }
    for (; i < K; i++) {
        const T ki = k[i], qi = o ? q[i] : 0, ni = kn ? kn[i] : 0;
        const T *s = S + (size_t)i * V;
        T *r = out + (size_t)i * V;
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

INLINE void FN(dl_forward_seq)(const T *q, const T *k, const T *v, const T *beta, const T *alpha,
                               const T *s0, T *o, T *ckpt, T *us, T *xs, T *S, T *buf, int L, int K,
                               int V, size_t sK, size_t sV, size_t sH) {
    const size_t KV = (size_t)K * V;
    FN(set_state)(S, s0, KV);
    T *x = xs ? xs : buf;
    if (L > 0) FN(col_dot)(S, k, x, K, V);
    for (int t = 0; t < L; t++) {
        if (ckpt && t % CHUNK == 0) memcpy(ckpt + (size_t)(t / CHUNK) * KV, S, sizeof(T) * KV);
        T *u = us ? us + t * sV : buf + 2 * V;
        T *xn = t + 1 == L ? x : xs ? xs + (t + 1) * sV : x == buf ? buf + V : buf;
        const T al = alpha ? alpha[t * sH] : (T)1, be = beta[t * sH], *vt = v + t * sV;
#pragma omp simd
        for (int j = 0; j < V; j++) u[j] = be * (vt[j] - al * x[j]);
        FN(dl_update)(S, S, k + t * sK, u, al, q + t * sK, o + t * sV, t + 1 < L ? k + (t + 1) * sK : NULL, xn, K, V);
        x = xn;
    }
}

int FN(dl_forward)(const T *q, const T *k, const T *v, const T *beta, const T *alpha, const T *s0,
                   T *o, T *ckpt, T *us, T *xs, T *s_final, int B, int H, int L, int K, int V) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
    T *S = malloc(sizeof(T) * (KV + 3 * (size_t)V));
    if (!S) return 1;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H, nK = row * K, nV = row * V;
        const T *al = alpha ? alpha + row : NULL, *sq = s0 ? s0 + n * KV : NULL;
        T *cq = ckpt ? ckpt + (size_t)n * nck * KV : NULL, *uq = us ? us + nV : NULL, *xq = xs ? xs + nV : NULL;
#define SEQ(al) \
    FN(dl_forward_seq)(q + nK, k + nK, v + nV, beta + row, al, sq, o + nV, cq, uq, xq, S, S + KV, L, K, VC, (size_t)H * K, (size_t)H * VC, H)
        SEQ_V(al)
#undef SEQ
        if (s_final) memcpy(s_final + n * KV, S, sizeof(T) * KV);
    }
    free(S);
    return 0;
}

/* R (1 or 2) rows of the backward, their shared vectors loaded once. A (hasA), token t: dS += q g^T;
   dq = S_t g, dk = dS u, dalpha += <dS, S_{t-1}> (gated), du += dS^T k. B (hasB, first), token t + 1's part
   through x_{t+1} = S_t^T k_{t+1}: dk_{t+1} += S_t dxn, dS_t = alpha_{t+1} dS + k_{t+1} dxn^T. Sc: S_t's rows,
   Sp: S_{t-1}'s. */
INLINE void FN(dl_rows)(const int R, const int hasA, const int hasB, const int gated, T *d, const T *Sc, const T *Sp,
                        const T *g, const T *u, T *restrict du, const T *dxn, const T *qt, const T *kt,
                        T *dq, T *dk, T *dal_sum, const T *kn, const T aln, T *dkn, int i, int V) {
/* row i + r's pointers and scalars, its share of the loop body over j, and its sums */
#define ROW_SETUP(r)                                                                                                 \
    T *restrict d##r = d + (size_t)(i + r) * V;                                                                      \
    const T *restrict c##r = Sc + (size_t)(i + r) * V;                                                               \
    const T *restrict p##r = hasA && gated && R > r ? Sp + (size_t)(i + r) * V : NULL;                               \
    const T q##r = R > r && hasA ? qt[i + r] : 0, k##r = R > r && hasA ? kt[i + r] : 0, n##r = R > r && hasB ? kn[i + r] : 0;
#define ROW_STEP(r)                      \
    {                                    \
        T e = d##r[j];                   \
        const T sv = c##r[j];            \
        if (hasB) {                      \
            ga##r += sv * dxj;           \
            e = aln * e + n##r * dxj;    \
        }                                \
        if (hasA) {                      \
            e += q##r * gj;              \
            gq##r += sv * gj;            \
            gk##r += e * uj;             \
            if (gated) gw##r += e * p##r[j]; \
            duj += k##r * e;             \
        }                                \
        d##r[j] = e;                     \
    }
#define ROW_SUMS(r)                                                              \
    {                                                                            \
        if (hasB) dkn[i + r] += ga##r;                                           \
        if (hasA) dq[i + r] = gq##r, dk[i + r] = gk##r, *dal_sum += gw##r;       \
    }
    ROW_SETUP(0)
    ROW_SETUP(1)
    T gq0 = 0, gk0 = 0, gw0 = 0, ga0 = 0, gq1 = 0, gk1 = 0, gw1 = 0, ga1 = 0;
#pragma omp simd reduction(+ : gq0, gk0, gw0, ga0, gq1, gk1, gw1, ga1)
    for (int j = 0; j < V; j++) {
        const T dxj = hasB ? dxn[j] : 0, gj = hasA ? g[j] : 0, uj = hasA ? u[j] : 0;
        T duj = 0;
        ROW_STEP(0)
        if (R > 1) ROW_STEP(1)
        if (hasA) du[j] += duj;
    }
    ROW_SUMS(0)
    if (R > 1) ROW_SUMS(1)
#undef ROW_SETUP
#undef ROW_STEP
#undef ROW_SUMS
}

INLINE void FN(dl_pass)(const int hasA, const int hasB, const int gated, T *d, const T *Sc, const T *Sp,
                        const T *g, const T *u, T *du, const T *dxn, const T *qt, const T *kt, T *dq,
                        T *dk, T *dal_sum, const T *kn, const T aln, T *dkn, int K, int V) {
    if (hasA) memset(du, 0, sizeof(T) * V);
    int i = 0;
    for (; i + 1 < K; i += 2)
        FN(dl_rows)(2, hasA, hasB, gated, d, Sc, Sp, g, u, du, dxn, qt, kt, dq, dk, dal_sum, kn, aln, dkn, i, V);
    for (; i < K; i++) FN(dl_rows)(1, hasA, hasB, gated, d, Sc, Sp, g, u, du, dxn, qt, kt, dq, dk, dal_sum, kn, aln, dkn, i, V);
}

INLINE void FN(dl_backward_seq)(const T *q, const T *k, const T *v, const T *beta, const T *alpha,
                                const T *ckpt, const T *us, const T *xs, const T *go, T *dq, T *dk,
                                T *dv, T *dbeta, T *dalpha, T *St, T *dS, T *du, T *dx, T *dxn,
                                int L, int K, int V, size_t sK, size_t sV, size_t sH, const int gated) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
#define AL(t) (gated ? alpha[(size_t)(t) * sH] : (T)1)
    for (int c = nck - 1; c >= 0; c--) {
        const int t0 = c * CHUNK, steps = L - t0 < CHUNK ? L - t0 : CHUNK;
        memcpy(St, ckpt + (size_t)c * KV, sizeof(T) * KV);
        for (int s = 0; s < steps; s++)
            FN(dl_update)(St + s * KV, St + (s + 1) * KV, k + (t0 + s) * sK, us + (t0 + s) * sV, AL(t0 + s), NULL, NULL, NULL,
                          NULL, K, V);
        for (int s = steps - 1; s >= 0; s--) {
            const int t = t0 + s;
            T *swap = dx;
            dx = dxn, dxn = swap; /* dxn: token t + 1's dx */
            const T *Sc = St + (s + 1) * KV, *Sp = St + s * KV, *g = go + t * sV, *u = us + t * sV;
            T dal = 0;
            if (s == steps - 1)
                FN(dl_pass)(1, 0, gated, dS, Sc, Sp, g, u, du, NULL, q + t * sK, k + t * sK, dq + t * sK, dk + t * sK, &dal, NULL,
                            0, NULL, K, V);
            else
                FN(dl_pass)(1, 1, gated, dS, Sc, Sp, g, u, du, dxn, q + t * sK, k + t * sK, dq + t * sK, dk + t * sK, &dal,
                            k + (t + 1) * sK, AL(t + 1), dk + (t + 1) * sK, K, V);
            /* through u = beta (v - alpha x) */
            const T al = AL(t), be = beta[t * sH], *vt = v + t * sV, *x = xs + t * sV;
            T *dvt = dv + t * sV, gb = 0, gx = 0;
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
        FN(dl_pass)(0, 1, gated, dS, St, NULL, NULL, NULL, NULL, dx, NULL, NULL, NULL, NULL, NULL, k + t0 * sK, AL(t0),
                    dk + t0 * sK, K, V);
    }
#undef AL
}

int FN(dl_backward)(const T *q, const T *k, const T *v, const T *beta, const T *alpha, const T *ckpt,
                    const T *us, const T *xs, const T *go, const T *gs_final, T *dq, T *dk, T *dv,
                    T *dbeta, T *dalpha, T *ds0, int B, int H, int L, int K, int V) {
    const size_t KV = (size_t)K * V;
    const int nck = dr_chunks(L, K, V);
    T *buf = malloc(sizeof(T) * ((CHUNK + 2) * KV + 3 * (size_t)V));
    if (!buf) return 1;
    T *St = buf, *dS = buf + (CHUNK + 1) * KV, *du = dS + KV, *dx = du + V, *dxn = dx + V;
    for (int n = 0; n < B * H; n++) {
        const size_t row = (size_t)(n / H) * L * H + n % H, nK = row * K, nV = row * V;
        FN(set_state)(dS, gs_final ? gs_final + n * KV : NULL, KV);
#define SEQ(G)                                                                                                                  \
    FN(dl_backward_seq)(q + nK, k + nK, v + nV, beta + row, G ? alpha + row : NULL, ckpt + (size_t)n * nck * KV, us + nV, \
                        xs + nV, go + nV, dq + nK, dk + nK, dv + nV, dbeta + row, G ? dalpha + row : NULL, St, dS, du, dx,  \
                        dxn, L, K, VC, (size_t)H * K, (size_t)H * VC, H, G)
        if (alpha) {
            SEQ_V(1)
        } else {
            SEQ_V(0)
        }
#undef SEQ
        if (ds0) memcpy(ds0 + n * KV, dS, sizeof(T) * KV);
    }
    free(buf);
    return 0;
}

/* ---- the readout of DeltaNet and Gated DeltaNet: y = RMSNorm(x) * w (* SiLU(z)), per row of V values,
   r = (mean(x^2) + eps)^-1/2; one pass forward and one back where PyTorch's composite takes a dozen.
   x, z, sg (sigmoid(z), from the caller: vectorized there), y, gy, gx, gz: (rows, V); w, gw: (V); z NULL: no
   gate; r: (rows), kept for the backward. */

int FN(norm_forward)(const T *x, const T *w, const T *z, const T *sg, T *y, T *r, int rows, int V,
                     double eps) {
    for (int n = 0; n < rows; n++) {
        const T *xr = x + (size_t)n * V;
        T *yr = y + (size_t)n * V, ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < V; j++) ss += xr[j] * xr[j];
        const T rn = (T)(1 / sqrt((double)(ss / V) + eps));
        r[n] = rn;
        if (z) {
            const T *zr = z + (size_t)n * V, *sr = sg + (size_t)n * V;
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
int FN(norm_backward)(const T *x, const T *w, const T *z, const T *sg, const T *r, const T *gy, T *gx,
                      T *gw, T *gz, int rows, int V) {
    for (int n = 0; n < rows; n++) {
        const T *xr = x + (size_t)n * V, *g = gy + (size_t)n * V, rn = r[n];
        T *restrict dx = gx + (size_t)n * V, dot = 0;
        if (z) {
            const T *zr = z + (size_t)n * V, *sr = sg + (size_t)n * V;
            T *restrict dz = gz + (size_t)n * V;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < V; j++) {
                const T s = sr[j], act = zr[j] * s, nj = xr[j] * rn, gn = g[j] * w[j] * act;
                gw[j] += g[j] * nj * act;
                dz[j] = g[j] * nj * w[j] * s * ((T)1 + zr[j] * ((T)1 - s));
                dx[j] = gn;
                dot += gn * nj;
            }
        } else {
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < V; j++) {
                const T nj = xr[j] * rn, gn = g[j] * w[j];
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

int FN(rk_readout_forward)(const T *o, const T *r, const T *k, const T *v, const T *g, const T *w,
                           const T *c, const T *rk, T *y, T *stats, int rows, int H, int d, double eps) {
    for (int n = 0; n < rows; n++) {
        const size_t off = (size_t)n * d, hd = (size_t)(n % H) * d;
        const T *on = o + off, *rn = r + off, *kn = k + off, *vn = v + off, *gn = g + off;
        const T *wh = w + hd, *ch = c + hd, *rkh = rk + hd;
        T *yn = y + off, sum = 0, bonus = 0, var = 0;
#pragma omp simd reduction(+ : sum, bonus)
        for (int j = 0; j < d; j++) {
            sum += on[j];
            bonus += rn[j] * kn[j] * rkh[j];
        }
        const T mean = sum / d;
#pragma omp simd reduction(+ : var)
        for (int j = 0; j < d; j++) var += (on[j] - mean) * (on[j] - mean);
        const T rs = (T)(1 / sqrt((double)(var / d) + eps));
#pragma omp simd
        for (int j = 0; j < d; j++) yn[j] = ((on[j] - mean) * rs * wh[j] + ch[j] + bonus * vn[j]) * gn[j];
        stats[3 * (size_t)n] = mean, stats[3 * (size_t)n + 1] = rs, stats[3 * (size_t)n + 2] = bonus;
    }
    return 0;
}

int FN(rk_readout_backward)(const T *o, const T *r, const T *k, const T *v, const T *g, const T *w,
                            const T *c, const T *rk, const T *stats, const T *gy, T *dout, T *dr, T *dk,
                            T *dv, T *dg, T *dw, T *dc, T *drk, int rows, int H, int d) {
    for (int n = 0; n < rows; n++) {
        const size_t off = (size_t)n * d, hd = (size_t)(n % H) * d;
        const T *on = o + off, *rn = r + off, *kn = k + off, *vn = v + off, *gn = g + off, *gyn = gy + off;
        const T *wh = w + hd, *ch = c + hd, *rkh = rk + hd;
        T *restrict don = dout + off, *restrict dgn = dg + off, *restrict dvn = dv + off, *restrict dwh = dw + hd;
        T *restrict dch = dc + hd;
        const T mean = stats[3 * (size_t)n], rs = stats[3 * (size_t)n + 1], bonus = stats[3 * (size_t)n + 2];
        T dbonus = 0, sdn = 0, sdnn = 0;
#pragma omp simd reduction(+ : dbonus, sdn, sdnn)
        for (int j = 0; j < d; j++) {
            const T nj = (on[j] - mean) * rs, gl = gyn[j] * gn[j], dn = gl * wh[j];
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
        T *restrict drn = dr + off, *restrict dkn = dk + off, *restrict drkh = drk + hd;
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

int FN(l2n_forward)(const T *x, T *y, T *r, int tokens, int G, long ts, int K, double eps, int scaled, double scale) {
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < G; h++) {
            const T *xr = x + (size_t)t * ts + (size_t)h * K;
            T *yr = y + ((size_t)t * G + h) * K, ss = 0;
#pragma omp simd reduction(+ : ss)
            for (int j = 0; j < K; j++) ss += xr[j] * xr[j];
            const int clamped = !((double)ss >= eps * eps); /* as clamp_min: |x| = eps is not clamped */
            const T rn = clamped ? (T)(1 / eps) : (T)(1 / sqrt((double)ss));
            const T m = rn * (h < scaled ? (T)scale : (T)1);
            r[(size_t)t * G + h] = clamped ? -rn : rn;
#pragma omp simd
            for (int j = 0; j < K; j++) yr[j] = xr[j] * m;
        }
    return 0;
}

int FN(l2n_backward)(const T *x, const T *r, const T *gy, T *gx, int tokens, int G, long ts, int K, int scaled,
                     double scale) {
    for (int t = 0; t < tokens; t++)
        for (int h = 0; h < G; h++) {
            const size_t row = (size_t)t * G + h;
            const T *xr = x + (size_t)t * ts + (size_t)h * K, *g = gy + row * K;
            T *restrict dx = gx + row * K;
            const T rn = r[row] < 0 ? -r[row] : r[row], sc = h < scaled ? (T)scale : (T)1;
            if (r[row] < 0) { /* below eps the map is linear: x / eps */
#pragma omp simd
                for (int j = 0; j < K; j++) dx[j] = g[j] * sc * rn;
                continue;
            }
            T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < K; j++) dot += g[j] * xr[j];
            dot *= rn * rn; /* (g . x^) / |x|, x^ = x / |x| */
#pragma omp simd
            for (int j = 0; j < K; j++) dx[j] = sc * rn * (g[j] - xr[j] * dot);
        }
    return 0;
}

#undef DISPATCH_V
#undef SEQ_V

#endif

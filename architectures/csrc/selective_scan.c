/* Mamba's selective scan (S6) on a CPU, forward and backward, never materializing the states.

   h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t,   y_t = sum_n C_t[n] h_t[n]      (per channel d)

   Layout: u, dt, y and their gradients (batch, L, D); B, C (batch, L, N); A (NA, D) with NA = N, or
   NA = 1 for one decay per channel shared by its N states (Mamba-2's SSD: a decay per head), whose
   exp is then taken once per channel and step. The state of
   one sequence, (N, D), stays in cache; the innermost loop runs over the D channels, so it is
   vectorized (exp included, inlined below) for any state size N. The forward saves
   the state every CHUNK steps (checkpoints: (batch, chunks, N, D), 1/CHUNK of the states); the
   backward recomputes the states of one chunk at a time from them, as mamba-ssm's kernel
   recomputes them in fast memory, and runs the adjoint
   lambda_t = C_t gy_t + exp(dt_{t+1} A) lambda_{t+1} from the end.

   With D a multiple of CHANNEL_BLOCK the adjoint (and, with one decay per channel, the block's forward scan)
   runs channel blocks outermost instead, the states inside, so that the sums over the states stay in
   registers.

   Further below, the rest of Mamba's and Mamba-2's blocks fused around the scan (s6_block_*) and the
   short convolution + SiLU ahead of it (conv_silu_*). */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conv_cl.h"

/* exp(x) inlined so that the channel loops vectorize it: 2^k exp(r) with k = round(c / ln 2), r
   reduced in two steps and exp(r) by Cephes' degree-6 polynomial (relative error ~2e-7, as
   expf's), for c = x clamped to the float range by the caller. A NaN stays NaN (a diverging run must
   show it): the clamps' comparisons are false for it, so c is the NaN and so is the polynomial. */
static inline float exp_of_clamped(float c) {
    const float k = rintf(c * 1.44269504088896341f);
    const float r = (c - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float fast_exp(float x) {
    const float lo = -87.33654f, hi = 88.72283f;
    return exp_of_clamped(x < lo ? lo : (x > hi ? hi : x));
}

/* For x <= 0 (or NaN), as the decays exp(dt A) of Mamba's blocks are (dt >= 0, A < 0): one clamp
   instead of two, a quarter of the exp's cost in the vectorized loops. */
static inline float exp_nonpos(float x) { return exp_of_clamped(x < -87.33654f ? -87.33654f : x); }

/* Sixteen floats, for the loops that keep their accumulators in registers (GCC's
   vector extension: one AVX-512 register, or two AVX2 ones); loaded and stored unaligned. */
typedef float vf16 __attribute__((vector_size(64)));
static inline vf16 ld16(const float *p) {
    vf16 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st16(float *p, vf16 v) { memcpy(p, &v, sizeof v); }
static inline float hsum16(vf16 v) {
    float s = 0.f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}
#define CHANNEL_BLOCK 32 /* channels per block of those loops: two vectors */

#define CHUNK 16

/* One step of the recurrence: h (N, D) from hprev (the same array in the forward), with decays exp(dt A)
   (NA, D) written to `decay` and dt u to `dtu` (D); `nonpos`: dt A <= 0 is known (a constant once inlined). */
static inline void step(float *h, const float *hprev, float *restrict decay, float *restrict dtu, const float *restrict A,
                        const float *restrict dt, const float *restrict u, const float *restrict B, int D, int N, int NA,
                        int nonpos) {
    for (int m = 0; m < NA; m++) {
        float *restrict am = decay + (size_t)m * D;
        const float *restrict Am = A + (size_t)m * D;
        if (nonpos)
#pragma omp simd
            for (int d = 0; d < D; d++) am[d] = exp_nonpos(dt[d] * Am[d]);
        else
#pragma omp simd
            for (int d = 0; d < D; d++) am[d] = fast_exp(dt[d] * Am[d]);
    }
#pragma omp simd
    for (int d = 0; d < D; d++) dtu[d] = dt[d] * u[d];
    for (int n = 0; n < N; n++) {
        float *hn = h + (size_t)n * D;
        const float *pn = hprev + (size_t)n * D;
        const float *restrict an = decay + (size_t)(NA == 1 ? 0 : n) * D;
        const float bn = B[n];
#pragma omp simd
        for (int d = 0; d < D; d++) hn[d] = an[d] * pn[d] + dtu[d] * bn;
    }
}

int s6_chunks(int L) { return (L + CHUNK - 1) / CHUNK; }

/* h, the state before step t of sequence b, into ckpt (batch, s6_chunks(L), N, D) at each chunk's first step;
   ckpt NULL: no backward follows */
static inline void checkpoint(float *ckpt, const float *h, size_t state, int b, int t, int L) {
    if (ckpt && t % CHUNK == 0) memcpy(ckpt + state * ((size_t)b * s6_chunks(L) + t / CHUNK), h, sizeof(float) * state);
}

/* The states h_t (buf, (t1 - t0, N, D)) and decays (into decays) of the steps t0..t1 - 1 of the sequence whose
   first row is base, recomputed from h0, the state before t0; u and B rows su and sb apart. */
static inline void recompute_chunk(float *buf, float *decays, float *dtu, const float *h0, const float *A, const float *dt,
                                   const float *u, int su, const float *B, int sb, size_t base, int t0, int t1, int D, int N,
                                   int NA, int nonpos) {
    const size_t state = (size_t)N * D, decay_size = (size_t)NA * D;
    for (int t = t0; t < t1; t++) {
        float *h = buf + state * (t - t0);
        const size_t row = base + t;
        step(h, t == t0 ? h0 : h - state, decays + decay_size * (t - t0), dtu, A, dt + row * D, u + row * su, B + row * sb, D, N,
             NA, nonpos);
    }
}

/* ckpt (batch, s6_chunks(L), N, D): the state before each chunk's first step, for the backward;
   NULL when no backward follows. */
int s6_forward(const float *u, const float *dt, const float *A, const float *B, const float *C, float *y,
               float *ckpt, int batch, int L, int D, int N, int NA) {
    const size_t state = (size_t)N * D;
    float *h = malloc(sizeof(float) * state), *decay = malloc(sizeof(float) * (size_t)(NA + 1) * D); /* decays, dt u */
    const int failed = !(h && decay);
    for (int b = 0; b < batch && !failed; b++) {
        memset(h, 0, sizeof(float) * state);
        for (int t = 0; t < L; t++) {
            checkpoint(ckpt, h, state, b, t, L);
            const size_t row = (size_t)b * L + t;
            step(h, h, decay, decay + (size_t)NA * D, A, dt + row * D, u + row * D, B + row * N, D, N, NA, 0);
            const float *Ct = C + row * N;
            float *restrict yt = y + row * D;
            memset(yt, 0, sizeof(float) * D);
            for (int n = 0; n < N; n++) {
                const float *restrict hn = h + (size_t)n * D;
                const float cn = Ct[n];
#pragma omp simd
                for (int d = 0; d < D; d++) yt[d] += cn * hn[d];
            }
        }
    }
    free(h); free(decay);
    return failed;
}

/* Prefetch `bytes` from p into the cache, for reading (write = 0) or writing. The backward walks its
   rows from the end, which the hardware prefetchers follow less well than a forward walk. */
static inline void prefetch(const void *p, size_t bytes, int write) {
    for (size_t i = 0; i < bytes; i += 64) {
        if (write) __builtin_prefetch((const char *)p + i, 1, 3);
        else __builtin_prefetch((const char *)p + i, 0, 3);
    }
}

/* adjoint_step for D a multiple of CHANNEL_BLOCK: channel blocks outermost, the states inside, so that dL/d(dt u)
   and the step sizes' gradient through the decays gather in registers over the states; gB's and gC's sums over
   the channels gather in one vector per state, summed at the end. `shared`: one decay per channel (NA = 1), else
   one per state (NA = N); a constant once inlined. */
static inline void adjoint_blocked(float *restrict lam, float *restrict gdtu, float *restrict gdtacc, float *restrict gA,
                                   float *gBt, float *gCt, const float *ht, const float *hprev, const float *restrict at,
                                   const float *restrict A, const float *restrict dtt, const float *restrict ut,
                                   const float *restrict gyt, const float *Bt, const float *Ct, int D, int N, int shared) {
    vf16 pc[N], pb[N];
    for (int n = 0; n < N; n++) pc[n] = pb[n] = (vf16){0};
    for (int d0 = 0; d0 < D; d0 += CHANNEL_BLOCK) {
        const vf16 g0 = ld16(gyt + d0), g1 = ld16(gyt + d0 + 16), t0 = ld16(dtt + d0), t1 = ld16(dtt + d0 + 16);
        const vf16 u0 = t0 * ld16(ut + d0), u1 = t1 * ld16(ut + d0 + 16);
        vf16 a0 = ld16(at + d0), a1 = ld16(at + d0 + 16), A0 = ld16(A + d0), A1 = ld16(A + d0 + 16);
        vf16 gu0 = {0}, gu1 = {0}, ga0 = {0}, ga1 = {0}; /* ga: sum of l h_{t-1} (shared), else of its dL/d(dt A) A */
        for (int n = 0; n < N; n++) {
            const size_t o = (size_t)n * D + d0;
            const float cn = Ct[n], bn = Bt[n];
            const vf16 l0 = ld16(lam + o) + g0 * cn, l1 = ld16(lam + o + 16) + g1 * cn; /* lambda_t */
            pc[n] += g0 * ld16(ht + o) + g1 * ld16(ht + o + 16);
            pb[n] += l0 * u0 + l1 * u1;
            gu0 += l0 * bn;
            gu1 += l1 * bn;
            if (shared) {
                ga0 += l0 * ld16(hprev + o);
                ga1 += l1 * ld16(hprev + o + 16);
            } else {
                a0 = ld16(at + o), a1 = ld16(at + o + 16), A0 = ld16(A + o), A1 = ld16(A + o + 16);
                const vf16 e0 = l0 * ld16(hprev + o) * a0, e1 = l1 * ld16(hprev + o + 16) * a1; /* dL/d(dt_t A) */
                ga0 += e0 * A0;
                ga1 += e1 * A1;
                st16(gA + o, ld16(gA + o) + e0 * t0);
                st16(gA + o + 16, ld16(gA + o + 16) + e1 * t1);
            }
            st16(lam + o, a0 * l0);
            st16(lam + o + 16, a1 * l1);
        }
        st16(gdtu + d0, gu0);
        st16(gdtu + d0 + 16, gu1);
        if (shared) {
            const vf16 e0 = ga0 * a0, e1 = ga1 * a1; /* dL/d(dt_t A) */
            st16(gdtacc + d0, e0 * A0);
            st16(gdtacc + d0 + 16, e1 * A1);
            st16(gA + d0, ld16(gA + d0) + e0 * t0);
            st16(gA + d0 + 16, ld16(gA + d0 + 16) + e1 * t1);
        } else {
            st16(gdtacc + d0, ga0);
            st16(gdtacc + d0 + 16, ga1);
        }
    }
    for (int n = 0; n < N; n++) {
        gCt[n] = hsum16(pc[n]);
        gBt[n] = hsum16(pb[n]);
    }
}

/* One step of the backward, t: lambda (N, D) holds exp(dt_{t+1} A) lambda_{t+1} and becomes
   exp(dt_t A) lambda_t; writes gB_t, gC_t, dL/d(dt_t u_t) to gdtu and the step sizes' gradient through
   the decays to gdtacc (both (D)); accumulates gA. h_t, h_{t-1} (N, D), the decays a_t (NA, D); dtu, gdecay:
   (D) scratch. Not inlined: inlined into the callers' loops, GCC 12 left its reductions scalar. */
static __attribute__((noinline)) void adjoint_step(float *restrict lam, float *restrict gdtu, float *restrict gdtacc,
                                                   float *restrict gdecay, float *restrict dtu, float *restrict gA, float *gBt,
                                                   float *gCt, const float *ht, const float *hprev, const float *at,
                                                   const float *A, const float *restrict dtt, const float *restrict ut,
                                                   const float *restrict gyt, const float *Bt, const float *Ct, int D, int N,
                                                   int NA) {
    if (D % CHANNEL_BLOCK == 0) {
        if (NA == 1) adjoint_blocked(lam, gdtu, gdtacc, gA, gBt, gCt, ht, hprev, at, A, dtt, ut, gyt, Bt, Ct, D, N, 1);
        else adjoint_blocked(lam, gdtu, gdtacc, gA, gBt, gCt, ht, hprev, at, A, dtt, ut, gyt, Bt, Ct, D, N, 0);
        return;
    }
#pragma omp simd
    for (int d = 0; d < D; d++) {
        gdtu[d] = gdtacc[d] = gdecay[d] = 0.f;
        dtu[d] = dtt[d] * ut[d];
    }
    for (int n = 0; n < N; n++) {
        const float cn = Ct[n], bn = Bt[n];
        const size_t m = (size_t)(NA == 1 ? 0 : n) * D;
        const float *restrict hn = ht + (size_t)n * D, *restrict pn = hprev + (size_t)n * D;
        const float *restrict an = at + m, *restrict An = A + m;
        float *restrict ln = lam + (size_t)n * D, *restrict gAn = gA + m;
        float gc = 0.f, gb = 0.f;
        if (NA == 1) { /* one decay per channel: its gradient summed over the states first */
#pragma omp simd reduction(+ : gc, gb)
            for (int d = 0; d < D; d++) {
                const float l = ln[d] + gyt[d] * cn; /* lambda_t */
                gc += gyt[d] * hn[d];
                gb += l * dtu[d];
                gdtu[d] += l * bn;
                gdecay[d] += l * pn[d]; /* times a_t below: dL/d(dt_t A) */
                ln[d] = an[d] * l;
            }
        } else {
#pragma omp simd reduction(+ : gc, gb)
            for (int d = 0; d < D; d++) {
                const float l = ln[d] + gyt[d] * cn;
                gc += gyt[d] * hn[d];
                gb += l * dtu[d];
                gdtu[d] += l * bn;
                const float g = l * pn[d] * an[d];
                gdtacc[d] += g * An[d];
                gAn[d] += g * dtt[d];
                ln[d] = an[d] * l;
            }
        }
        gCt[n] = gc;
        gBt[n] = gb;
    }
    if (NA == 1)
#pragma omp simd
        for (int d = 0; d < D; d++) {
            const float g = gdecay[d] * at[d];
            gdtacc[d] = g * A[d];
            gA[d] += g * dtt[d];
        }
}

/* gA is accumulated into (the caller zeroes it); every other gradient is written. */
int s6_backward(const float *u, const float *dt, const float *A, const float *B, const float *C,
                const float *ckpt_all, const float *gy, float *gu, float *gdt, float *gA, float *gB, float *gC,
                int batch, int L, int D, int N, int NA) {
    const int chunks = s6_chunks(L);
    const size_t decay_size = (size_t)NA * D;
    const size_t state = (size_t)N * D;
    float *buf = malloc(sizeof(float) * state * CHUNK);       /* h_t of the chunk being differentiated */
    float *decays = malloc(sizeof(float) * decay_size * CHUNK); /* exp(dt_t A) of the same steps */
    float *gdecay = malloc(sizeof(float) * 2 * D);           /* dL/d(dt_t A) summed over states (NA = 1), dt u */
    float *lam = malloc(sizeof(float) * state);               /* exp(dt_{t+1} A) lambda_{t+1} */
    float *gdtu = malloc(sizeof(float) * D), *gdtacc = malloc(sizeof(float) * D);
    int failed = !(buf && decays && gdecay && lam && gdtu && gdtacc);
    for (int b = 0; b < batch && !failed; b++) {
        const size_t base = (size_t)b * L;
        const float *ckpt = ckpt_all + state * chunks * (size_t)b;
        memset(lam, 0, sizeof(float) * state);
        for (int c = chunks - 1; c >= 0; c--) {
            const int t0 = c * CHUNK, t1 = (t0 + CHUNK < L) ? t0 + CHUNK : L;
            recompute_chunk(buf, decays, gdecay + D, ckpt + state * c, A, dt, u, D, B, N, base, t0, t1, D, N, NA, 0);
            for (int t = t1 - 1; t >= t0; t--) {
                const size_t row = base + t;
                const float *restrict ut = u + row * D, *restrict dtt = dt + row * D;
                const float *ht = buf + state * (t - t0), *at = decays + decay_size * (t - t0);
                const float *hprev = t > t0 ? ht - state : ckpt + state * c; /* h_{-1} = 0 */
                adjoint_step(lam, gdtu, gdtacc, gdecay, gdecay + D, gA, gB + row * N, gC + row * N, ht, hprev, at, A, dtt, ut, gy + row * D,
                             B + row * N, C + row * N, D, N, NA);
                float *restrict gut = gu + row * D, *restrict gdtt = gdt + row * D;
#pragma omp simd
                for (int d = 0; d < D; d++) {
                    gut[d] = gdtu[d] * dtt[d];
                    gdtt[d] = gdtacc[d] + gdtu[d] * ut[d];
                }
            }
        }
    }
    free(buf); free(decays); free(gdecay); free(lam); free(gdtu); free(gdtacc);
    return failed;
}

/* ---- The rest of Mamba's (and Mamba-2's) block around the scan, fused into it ----

   dt = softplus(dtl W + dt_bias), Mamba: dtl (R) per step, W (R, D) the low-rank step-size projection;
                                   Mamba-2: W NULL, dtl one logit per head of D / R channels, dt_bias (R)
   out = (y + Dskip u) * silu(z)
   A <= 0 (the blocks' -exp(A_log)), so dt A <= 0 and the decays take exp_nonpos.
   u, dtl, B, C, z and their gradients are rows of (batch, L, .) with their own row strides: slices of
   the projections' outputs and of their gradients, never copied. */

/* log(1 + w) for finite w >= 0: Cephes' logf polynomial on v = 1 + w, plus the rounding of v. */
static inline float log1p_pos(float w) {
    const float v = 1.0f + w;
    int32_t bits;
    memcpy(&bits, &v, sizeof bits);
    float e = (float)(((bits >> 23) & 0xff) - 126);
    bits = (bits & 0x007fffff) | 0x3f000000; /* the mantissa, in [0.5, 1) */
    float m;
    memcpy(&m, &bits, sizeof m);
    const int low = m < 0.70710678f;
    e = low ? e - 1.0f : e;
    m = low ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    const float r = m + (p * m * z - 2.12194440e-4f * e - 0.5f * z) + 0.693359375f * e;
    return r + (w - (v - 1.0f)) / v;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

/* dt (D) and softplus' derivative sig (D) of one step, as torch's softplus (x itself above 20). */
static inline void step_sizes(float *restrict dt, float *restrict sig, const float *restrict dtl, const float *restrict W,
                              const float *restrict dtb, int R, int D) {
    if (!W) { /* one step size per head of P channels: softplus once per head */
        const int P = D / R;
        float v[R], g[R];
#pragma omp simd
        for (int h = 0; h < R; h++) {
            const float x = dtl[h] + dtb[h], e = fast_exp(x);
            v[h] = x > 20.0f ? x : log1p_pos(e);
            g[h] = x > 20.0f ? 1.0f : e / (1.0f + e);
        }
        for (int h = 0; h < R; h++)
            for (int j = 0; j < P; j++) {
                dt[h * P + j] = v[h];
                sig[h * P + j] = g[h];
            }
        return;
    }
#pragma omp simd
    for (int d = 0; d < D; d++) dt[d] = dtb[d];
    for (int r = 0; r < R; r++) {
        const float *restrict Wr = W + (size_t)r * D;
        const float x = dtl[r];
#pragma omp simd
        for (int d = 0; d < D; d++) dt[d] += x * Wr[d];
    }
#pragma omp simd
    for (int d = 0; d < D; d++) {
        const float x = dt[d], e = fast_exp(x);
        dt[d] = x > 20.0f ? x : log1p_pos(e);
        sig[d] = x > 20.0f ? 1.0f : e / (1.0f + e);
    }
}

/* Mamba-2's gated RMSNorm of one row o (D), in place: o * w / sqrt(mean(o^2) + eps); returns 1 / sqrt(.). */
static __attribute__((noinline)) float rms_forward(float *restrict o, const float *restrict w, float eps, int D) {
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int d = 0; d < D; d++) ss += o[d] * o[d];
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
#pragma omp simd
    for (int d = 0; d < D; d++) o[d] *= r * w[d];
    return r;
}

/* Its backward: g (D), the gradient of the normalized row, becomes that of its input x (D); gw accumulated. */
static __attribute__((noinline)) void rms_backward(float *restrict g, const float *restrict x, const float *restrict w,
                                                   float r, float *restrict gw, int D) {
    float c = 0.f;
#pragma omp simd reduction(+ : c)
    for (int d = 0; d < D; d++) {
        gw[d] += g[d] * x[d] * r;
        c += g[d] * w[d] * x[d] * r;
    }
    c /= (float)D;
#pragma omp simd
    for (int d = 0; d < D; d++) g[d] = r * (g[d] * w[d] - x[d] * r * c);
}

/* dt, sig, yd (= y + Dskip u) (batch, L, D), ckpt and rstd (batch, L) are saved for the backward (NULL: none
   follows). normw (D), or NULL: Mamba-2's RMSNorm of the gated output, with eps. */
int s6_block_forward(const float *u, int su, const float *dtl, int sdl, const float *W, const float *dtb, int R,
                     const float *A, int NA, const float *B, const float *C, int sbc, const float *z, int sz,
                     const float *Dskip, const float *normw, float eps, float *out, float *dt, float *sig, float *yd,
                     float *ckpt, float *rstd, int batch, int L, int D, int N) {
    const size_t state = (size_t)N * D;
    /* decay: exp(dt A) when NA = 1, then dt u */
    float *h = malloc(sizeof(float) * state), *decay = malloc(sizeof(float) * 2 * (size_t)D);
    float *scratch = malloc(sizeof(float) * 2 * D);
    if (!h || !decay || !scratch) {
        free(h); free(decay); free(scratch);
        return 1;
    }
    for (int b = 0; b < batch; b++) {
        memset(h, 0, sizeof(float) * state);
        for (int t = 0; t < L; t++) {
            checkpoint(ckpt, h, state, b, t, L);
            const size_t row = (size_t)b * L + t;
            const float *restrict ut = u + row * su, *restrict zt = z + row * sz;
            const float *Bt = B + row * sbc, *Ct = C + row * sbc;
            float *restrict dtt = ckpt ? dt + row * D : scratch, *restrict sigt = ckpt ? sig + row * D : scratch + D;
            step_sizes(dtt, sigt, dtl + row * sdl, W, dtb, R, D);
            float *restrict ot = out + row * D, *restrict dtu = decay + D;
#pragma omp simd
            for (int d = 0; d < D; d++) {
                ot[d] = Dskip[d] * ut[d];
                dtu[d] = dtt[d] * ut[d];
            }
            if (NA == 1)
#pragma omp simd
                for (int d = 0; d < D; d++) decay[d] = exp_nonpos(dtt[d] * A[d]);
            if (NA == 1 && D % CHANNEL_BLOCK == 0) { /* channel blocks outermost: the output stays in registers */
                for (int d0 = 0; d0 < D; d0 += CHANNEL_BLOCK) {
                    const vf16 a0 = ld16(decay + d0), a1 = ld16(decay + d0 + 16), u0 = ld16(dtu + d0), u1 = ld16(dtu + d0 + 16);
                    vf16 o0 = ld16(ot + d0), o1 = ld16(ot + d0 + 16);
                    for (int n = 0; n < N; n++) {
                        float *hn = h + (size_t)n * D + d0;
                        const float bn = Bt[n], cn = Ct[n];
                        const vf16 h0 = a0 * ld16(hn) + u0 * bn, h1 = a1 * ld16(hn + 16) + u1 * bn;
                        st16(hn, h0);
                        st16(hn + 16, h1);
                        o0 += cn * h0;
                        o1 += cn * h1;
                    }
                    st16(ot + d0, o0);
                    st16(ot + d0 + 16, o1);
                }
            } else
            for (int n = 0; n < N; n++) { /* decay, state and output in one pass over the state */
                float *restrict hn = h + (size_t)n * D;
                const float *restrict An = A + (size_t)(NA == 1 ? 0 : n) * D;
                const float bn = Bt[n], cn = Ct[n];
                if (NA == 1) {
#pragma omp simd
                    for (int d = 0; d < D; d++) {
                        hn[d] = decay[d] * hn[d] + dtu[d] * bn;
                        ot[d] += cn * hn[d];
                    }
                } else {
#pragma omp simd
                    for (int d = 0; d < D; d++) {
                        hn[d] = exp_nonpos(dtt[d] * An[d]) * hn[d] + dtu[d] * bn;
                        ot[d] += cn * hn[d];
                    }
                }
            }
            if (ckpt) memcpy(yd + row * D, ot, sizeof(float) * D);
#pragma omp simd
            for (int d = 0; d < D; d++) ot[d] *= zt[d] * sigmoid(zt[d]);
            if (normw) {
                const float r = rms_forward(ot, normw, eps, D);
                if (rstd) rstd[row] = r;
            }
        }
    }
    free(h); free(decay); free(scratch);
    return 0;
}

/* The step sizes' projection's share of the backward, one step: g (D) = dL/d(dt before softplus). */
static __attribute__((noinline)) void dt_backward(float *restrict gdtl, float *restrict gW, float *restrict gdtb,
                                                    const float *restrict g, const float *restrict dtl, const float *restrict W,
                                                    int R, int D) {
    if (W) {
        for (int r = 0; r < R; r++) {
            const float *restrict Wr = W + (size_t)r * D;
            float *restrict gWr = gW + (size_t)r * D;
            const float x = dtl[r];
            float acc = 0.f;
#pragma omp simd reduction(+ : acc)
            for (int d = 0; d < D; d++) {
                acc += g[d] * Wr[d];
                gWr[d] += g[d] * x;
            }
            gdtl[r] = acc;
        }
#pragma omp simd
        for (int d = 0; d < D; d++) gdtb[d] += g[d];
    } else {
        const int P = D / R;
        for (int h = 0; h < R; h++) {
            float acc = 0.f;
            for (int j = 0; j < P; j++) acc += g[h * P + j];
            gdtl[h] = acc;
            gdtb[h] += acc;
        }
    }
}

/* gW, gdtb, gA and gDskip are accumulated into (the caller zeroes them); gu, gdtl, gB, gC and gz are written. */
int s6_block_backward(const float *u, int su, const float *dtl, int sdl, const float *W, int R, const float *A, int NA,
                      const float *B, const float *C, int sbc, const float *z, int sz, const float *Dskip,
                      const float *normw, const float *rstd, const float *dt, const float *sig, const float *yd,
                      const float *ckpt_all, const float *gout, float *gu, int sgu, float *gdtl, int sgdl, float *gW,
                      float *gdtb, float *gA, float *gB, float *gC, int sgbc, float *gz, int sgz, float *gDskip, float *gnormw,
                      int batch, int L, int D, int N) {
    const int chunks = s6_chunks(L);
    const size_t decay_size = (size_t)NA * D;
    const size_t state = (size_t)N * D;
    float *buf = malloc(sizeof(float) * state * CHUNK);
    float *decays = malloc(sizeof(float) * decay_size * CHUNK);
    float *gdecay = malloc(sizeof(float) * 2 * D);
    float *lam = malloc(sizeof(float) * state);
    float *gdtu = malloc(sizeof(float) * D), *gdtacc = malloc(sizeof(float) * D), *gy = malloc(sizeof(float) * 4 * D);
    int failed = !(buf && decays && gdecay && lam && gdtu && gdtacc && gy);
    for (int b = 0; b < batch && !failed; b++) {
        const size_t base = (size_t)b * L;
        const float *ckpt = ckpt_all + state * chunks * (size_t)b;
        memset(lam, 0, sizeof(float) * state);
        for (int c = chunks - 1; c >= 0; c--) {
            const int t0 = c * CHUNK, t1 = (t0 + CHUNK < L) ? t0 + CHUNK : L;
            recompute_chunk(buf, decays, gdecay + D, ckpt + state * c, A, dt, u, su, B, sbc, base, t0, t1, D, N, NA, 1);
            for (int t = t1 - 1; t >= t0; t--) {
                const size_t row = base + t;
                if (t > 0) { /* the rows of step t - 1, going backwards through memory */
                    const size_t r = row - 1, bytes = sizeof(float) * D;
                    prefetch(u + r * su, bytes, 0); prefetch(dt + r * D, bytes, 0); prefetch(sig + r * D, bytes, 0);
                    prefetch(z + r * sz, bytes, 0); prefetch(gout + r * D, bytes, 0); prefetch(yd + r * D, bytes, 0);
                    prefetch(gu + r * sgu, bytes, 1); prefetch(gz + r * sgz, bytes, 1);
                }
                const float *restrict ut = u + row * su, *restrict dtt = dt + row * D, *restrict zt = z + row * sz;
                const float *restrict got = gout + row * D, *restrict ydt = yd + row * D;
                float *restrict gzt = gz + row * sgz;
                float *restrict sz_t = gy + 3 * D; /* sigmoid(z) */
#pragma omp simd
                for (int d = 0; d < D; d++) sz_t[d] = sigmoid(zt[d]);
                if (normw) { /* back through the norm first: got becomes the gated output's gradient */
                    float *restrict gg = gy + D, *restrict x = gy + 2 * D;
#pragma omp simd
                    for (int d = 0; d < D; d++) {
                        gg[d] = got[d];
                        x[d] = ydt[d] * zt[d] * sz_t[d];
                    }
                    rms_backward(gg, x, normw, rstd[row], gnormw, D);
                    got = gg;
                }
#pragma omp simd
                for (int d = 0; d < D; d++) { /* through the gate: out = yd * silu(z) */
                    const float s = sz_t[d];
                    gy[d] = got[d] * zt[d] * s;
                    gzt[d] = got[d] * ydt[d] * s * (1.0f + zt[d] * (1.0f - s));
                    gDskip[d] += gy[d] * ut[d];
                }
                const float *ht = buf + state * (t - t0), *at = decays + decay_size * (t - t0);
                const float *hprev = t > t0 ? ht - state : ckpt + state * c; /* h_{-1} = 0 */
                adjoint_step(lam, gdtu, gdtacc, gdecay, gdecay + D, gA, gB + row * sgbc, gC + row * sgbc, ht, hprev, at, A, dtt, ut, gy,
                             B + row * sbc, C + row * sbc, D, N, NA);
                float *restrict gut = gu + row * sgu;
                const float *restrict sigt = sig + row * D;
#pragma omp simd
                for (int d = 0; d < D; d++) {
                    gut[d] = gdtu[d] * dtt[d] + gy[d] * Dskip[d];
                    gdtacc[d] = (gdtacc[d] + gdtu[d] * ut[d]) * sigt[d]; /* dL/d(dt before softplus) */
                }
                dt_backward(gdtl + row * sgdl, gW, gdtb, gdtacc, dtl + row * sdl, W, R, D);
            }
        }
    }
    free(buf); free(decays); free(gdecay); free(lam); free(gdtu); free(gdtacc); free(gy);
    return failed;
}

/* The short depthwise causal convolution and SiLU ahead of the scan, channels-last: x rows of stride sx
   (a slice of the in-projection), w (K, C), y = silu(c), c = conv(x) (batch, L, C) contiguous; c is kept
   for the backward (pre; NULL: none follows). */
void conv_silu_forward(const float *x, int sx, const float *w, const float *bias, float *y, float *pre, int batch, int L,
                       int C, int K) {
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < L; t++) {
            float *restrict yt = y + ((size_t)b * L + t) * C;
            conv_cl_step(yt, x, sx, w, bias, b, t, L, C, K);
            if (pre) memcpy(pre + ((size_t)b * L + t) * C, yt, sizeof(float) * C);
#pragma omp simd
            for (int c = 0; c < C; c++) yt[c] *= sigmoid(yt[c]);
        }
}

/* gy, pre (batch, L, C) contiguous; gx rows of stride sgx, written; gw (K, C) and gbias accumulated into. */
int conv_silu_backward(const float *x, int sx, const float *w, const float *pre, const float *gy, float *gx, int sgx,
                       float *gw, float *gbias, int batch, int L, int C, int K) {
    float *gc = malloc(sizeof(float) * (size_t)L * C); /* dL/d(conv output) of one sequence */
    if (!gc) return 1;
    for (int b = 0; b < batch; b++) {
        for (int t = 0; t < L; t++) {
            float *restrict gct = gc + (size_t)t * C;
            const float *restrict gyt = gy + ((size_t)b * L + t) * C, *restrict ct = pre + ((size_t)b * L + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                const float s = sigmoid(ct[c]);
                gct[c] = gyt[c] * s * (1.0f + ct[c] * (1.0f - s));
            }
        }
        for (int t = 0; t < L; t++)
            conv_cl_step_backward(gx + ((size_t)b * L + t) * sgx, gw, gbias, gc, 0, x, sx, w, b, t, L, C, K);
    }
    free(gc);
    return 0;
}

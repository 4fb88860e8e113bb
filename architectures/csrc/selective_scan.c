/* Mamba's selective scan (S6) on a CPU, forward and backward, never materializing the states.

   h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t,   y_t = sum_n C_t[n] h_t[n]      (per channel d)

   Layout: u, dt, y and their gradients (batch, L, D); B, C (batch, L, N); A (NA, D) with NA = N, or
   NA = 1 for one decay per channel shared by its N states (Mamba-2's SSD: a decay per head), whose
   exp is then taken once per channel and step. The state of
   one sequence, (N, D), stays in cache; the innermost loop runs over the D channels, so it is
   vectorized (exp included, through glibc's vector math) for any state size N. The forward saves
   the state every CHUNK steps (checkpoints: (batch, chunks, N, D), 1/CHUNK of the states); the
   backward recomputes the states of one chunk at a time from them, as mamba-ssm's kernel
   recomputes them in fast memory, and runs the adjoint
   lambda_t = C_t gy_t + exp(dt_{t+1} A) lambda_{t+1} from the end. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* exp(x) inlined so that the channel loops vectorize it: 2^k exp(r) with k = round(x / ln 2), r
   reduced in two steps and exp(r) by Cephes' degree-6 polynomial (relative error ~2e-7, as
   expf's); x is clamped to the float range, and a NaN stays NaN (a diverging run must show it). */
static inline float fast_exp(float x) {
    const float lo = -87.33654f, hi = 88.72283f;
    float c = x < lo ? lo : (x > hi ? hi : x);
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
    return x != x ? x : p * scale;
}

#define CHUNK 16

/* One step of the recurrence on the state h (N, D), with decays exp(dt A) (NA, D) written to
   `decay` (NA x D floats). */
static inline void step(float *restrict h, float *restrict decay, const float *restrict A, const float *restrict dt,
                        const float *restrict u, const float *restrict B, int D, int N, int NA) {
    for (int m = 0; m < NA; m++) {
        float *restrict am = decay + (size_t)m * D;
        const float *restrict Am = A + (size_t)m * D;
#pragma omp simd
        for (int d = 0; d < D; d++) am[d] = fast_exp(dt[d] * Am[d]);
    }
    for (int n = 0; n < N; n++) {
        float *restrict hn = h + (size_t)n * D;
        const float *restrict an = decay + (size_t)(NA == 1 ? 0 : n) * D;
        const float bn = B[n];
#pragma omp simd
        for (int d = 0; d < D; d++) hn[d] = an[d] * hn[d] + dt[d] * u[d] * bn;
    }
}

int s6_chunks(int L) { return (L + CHUNK - 1) / CHUNK; }

/* ckpt (batch, s6_chunks(L), N, D): the state before each chunk's first step, for the backward;
   NULL when no backward follows. */
int s6_forward(const float *u, const float *dt, const float *A, const float *B, const float *C, float *y,
               float *ckpt, int batch, int L, int D, int N, int NA) {
    const size_t state = (size_t)N * D;
    float *h = malloc(sizeof(float) * state), *decay = malloc(sizeof(float) * (size_t)NA * D);
    if (!h || !decay) {
        free(h); free(decay);
        return 1;
    }
    for (int b = 0; b < batch; b++) {
        memset(h, 0, sizeof(float) * state);
        for (int t = 0; t < L; t++) {
            if (ckpt && t % CHUNK == 0) memcpy(ckpt + state * ((size_t)b * s6_chunks(L) + t / CHUNK), h, sizeof(float) * state);
            const size_t row = (size_t)b * L + t;
            const float *restrict ut = u + row * D, *restrict dtt = dt + row * D;
            const float *Bt = B + row * N, *Ct = C + row * N;
            float *restrict yt = y + row * D;
            step(h, decay, A, dtt, ut, Bt, D, N, NA);
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
    return 0;
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
    float *gdecay = malloc(sizeof(float) * decay_size);        /* dL/d(dt_t A), summed over states */
    float *lam = malloc(sizeof(float) * state);               /* exp(dt_{t+1} A) lambda_{t+1} */
    float *gdtu = malloc(sizeof(float) * D), *gdtacc = malloc(sizeof(float) * D);
    int failed = !(buf && decays && gdecay && lam && gdtu && gdtacc);
    for (int b = 0; b < batch && !failed; b++) {
        const size_t base = (size_t)b * L;
        const float *ckpt = ckpt_all + state * chunks * (size_t)b;
        memset(lam, 0, sizeof(float) * state);
        for (int c = chunks - 1; c >= 0; c--) {
            const int t0 = c * CHUNK, t1 = (t0 + CHUNK < L) ? t0 + CHUNK : L;
            for (int t = t0; t < t1; t++) {
                float *h = buf + state * (t - t0);
                memcpy(h, t == t0 ? ckpt + state * c : h - state, sizeof(float) * state);
                step(h, decays + decay_size * (t - t0), A, dt + (base + t) * D, u + (base + t) * D, B + (base + t) * N, D, N, NA);
            }
            for (int t = t1 - 1; t >= t0; t--) {
                const size_t row = base + t;
                const float *restrict ut = u + row * D, *restrict dtt = dt + row * D, *restrict gyt = gy + row * D;
                const float *ht = buf + state * (t - t0), *at = decays + decay_size * (t - t0);
                const float *hprev = t > t0 ? ht - state : ckpt + state * c; /* h_{-1} = 0 */
                memset(gdtu, 0, sizeof(float) * D);
                memset(gdecay, 0, sizeof(float) * decay_size);
                for (int n = 0; n < N; n++) {
                    const float cn = C[row * N + n], bn = B[row * N + n];
                    const size_t m = (size_t)(NA == 1 ? 0 : n) * D;
                    const float *restrict hn = ht + (size_t)n * D, *restrict pn = hprev + (size_t)n * D;
                    const float *restrict an = at + m;
                    float *restrict ln = lam + (size_t)n * D, *restrict gm = gdecay + m, *restrict gdtu_ = gdtu;
                    float gc = 0.f, gb = 0.f;
#pragma omp simd reduction(+ : gc, gb)
                    for (int d = 0; d < D; d++) {
                        const float l = ln[d] + gyt[d] * cn; /* lambda_t */
                        gc += gyt[d] * hn[d];
                        gb += l * dtt[d] * ut[d];
                        gdtu_[d] += l * bn;
                        gm[d] += l * pn[d] * an[d]; /* dL/d(dt_t A) */
                        ln[d] = an[d] * l;
                    }
                    gC[row * N + n] = gc;
                    gB[row * N + n] = gb;
                }
                memset(gdtacc, 0, sizeof(float) * D);
                for (int m = 0; m < NA; m++) {
                    const float *restrict Am = A + (size_t)m * D, *restrict gm = gdecay + (size_t)m * D;
                    float *restrict gAm = gA + (size_t)m * D, *restrict gdtacc_ = gdtacc;
#pragma omp simd
                    for (int d = 0; d < D; d++) {
                        gdtacc_[d] += gm[d] * Am[d];
                        gAm[d] += gm[d] * dtt[d];
                    }
                }
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

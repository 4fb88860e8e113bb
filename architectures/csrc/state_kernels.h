/* What delta_rule.c and linear_recurrence.c share: a K x V state per sequence, stepped token by token and
   checkpointed every CHUNK steps for the backward, with bodies compiled once per scalar type (instantiate.h)
   and specialized on the decay mode and the value dim. Included at the top of each file, and again at the
   top of its body, for the part per scalar type T (the part under #ifdef T at the end). */

#ifndef STATE_KERNELS_H
#define STATE_KERNELS_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* rows of 8-64 values: 512-bit vectors leave half-filled loops and cost more than they bring */
#pragma GCC target("prefer-vector-width=256")
#endif

#define INLINE static inline __attribute__((always_inline))

/* steps per checkpoint: the backward keeps CHUNK + 1 states of a sequence; 32 while they stay well inside
   L2 (K V <= 2048), else 16 */
static inline int chunk_len(int K, int V) { return (size_t)K * V <= 2048 ? 32 : 16; }
#define CHUNK chunk_len(K, V)
static inline int chunks(int L, int K, int V) { return (L + CHUNK - 1) / CHUNK; }

/* The decay mode and (in fp32, the training dtype) the value dim as compile-time constants, so that the
   row loops unroll into registers; fp64 (the tests) takes the generic loops and the build stays short.
   DISPATCH_MODE calls CALL(m) with m the constant mode; IF_V(n, ...) ... ELSE_V(...) calls CALL(arg) with VC
   the value dim, a constant when it is n. */
#define FAST (sizeof(T) == 4)
#define DISPATCH_MODE(CALL) \
    if (mode == 2) {        \
        CALL(2);            \
    } else if (mode == 1) { \
        CALL(1);            \
    } else {                \
        CALL(0);            \
    }
#define IF_V(n, CALL, arg)  \
    if (FAST && V == (n)) { \
        enum { VC = (n) };  \
        CALL(arg);          \
    } else
#define ELSE_V(CALL, arg) \
    {                     \
        const int VC = V; \
        CALL(arg);        \
    }

#endif

#ifdef T
/* the decay of key row i: w's own (mode 2), the head's one (mode 1) or none (mode 0); a function, as
   a macro it changes what GCC makes of the callers' loops */
INLINE T FN(decay)(const T *w, const int mode, int i) { return mode == 2 ? w[i] : mode == 1 ? w[0] : (T)1; }
#endif

/* Compiles BODY (a file's type-generic part) twice: with T float and FN(name) name_f32, then T double and
   FN(name) name_f64. Not guarded: each file that instantiates includes it once. */

#define T float
#define FN(name) name##_f32
#include BODY
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include BODY
#undef T
#undef FN
#undef BODY

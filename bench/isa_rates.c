/* Instruction throughput of the three multiply-add instructions the
 * kernels are built on, on one core: f32 FMA (vfmadd231ps zmm, 16
 * products), bf16 pairs (vdpbf16ps zmm, 32 products) and int8 (vpdpbusd
 * zmm, 64 products), each as 16 independent chains so that latency does
 * not count. It says what a CPU can give a kernel set before any kernel is
 * written: --precision bf16 can only beat f32 where vdpbf16ps delivers more
 * products per second than the FMA (BENCHMARKS.md, training with AVX-512).
 *
 *   build/bench/isa_rates [SECONDS_PER_ROW]
 *
 * Needs AVX-512 F/BF16/VNNI; says so and exits 0 on a CPU without them. */
#include <stdio.h>
#include <stdlib.h>

#include "base/clock.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define TGT __attribute__((target("avx512f,avx512bf16,avx512vnni"), noinline))

/* 16 accumulators with distinct values, so no two chains can be merged;
 * the asm keeps the operand opaque, so no iteration can be folded. */
#define CHAINS(T, INIT, STEP)                                            \
    T a[16];                                                             \
    for (int i = 0; i < 16; i++) a[i] = INIT(i);                          \
    for (long it = 0; it < n; it++) {                                    \
        __asm__ volatile("" : "+v"(x));                                  \
        _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) a[i] = STEP(a[i]); \
    }                                                                    \
    for (int i = 1; i < 16; i++) a[0] = ADD(a[0], a[i]);

#define F_INIT(i) _mm512_set1_ps((float)(i))
#define F_FMA(v) _mm512_fmadd_ps(x, y, v)
#define F_BF(v) _mm512_dpbf16_ps(v, (__m512bh)x, (__m512bh)y)
#define I_INIT(i) _mm512_set1_epi32(i)
#define I_VNNI(v) _mm512_dpbusd_epi32(v, x, y)

TGT static float run_fma(long n) {
    __m512 x = _mm512_set1_ps(1.0f), y = _mm512_set1_ps(1e-9f);
#define ADD _mm512_add_ps
    CHAINS(__m512, F_INIT, F_FMA)
    return _mm512_reduce_add_ps(a[0]);
#undef ADD
}

TGT static float run_bf16(long n) {
    __m512 x = (__m512)_mm512_set1_epi32(0x3f803f80), y = (__m512)_mm512_set1_epi32(0x30003000);
#define ADD _mm512_add_ps
    CHAINS(__m512, F_INIT, F_BF)
    return _mm512_reduce_add_ps(a[0]);
#undef ADD
}

TGT static float run_vnni(long n) {
    __m512i x = _mm512_set1_epi8(1), y = _mm512_set1_epi8(1);
#define ADD _mm512_add_epi32
    CHAINS(__m512i, I_INIT, I_VNNI)
    return (float)_mm512_reduce_add_epi32(a[0]);
#undef ADD
}

int main(int argc, char **argv) {
    const double secs = argc > 1 ? atof(argv[1]) : 0.5;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bf16") ||
        !__builtin_cpu_supports("avx512vnni")) {
        printf("this CPU lacks AVX-512 F/BF16/VNNI: nothing to measure\n");
        return 0;
    }
    static const struct {
        const char *name;
        float (*fn)(long);
        int products;
    } rows[] = {
        {"vfmadd231ps zmm (f32)", run_fma, 16},
        {"vdpbf16ps zmm (bf16)", run_bf16, 32},
        {"vpdpbusd zmm (int8)", run_vnni, 64},
    };
    printf("| instruction | G instructions/s | G products/s |\n|---|---|---|\n");
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        long n = 1 << 16;
        double dt = 0, sink = 0;
        for (;;) { /* grow n until a run lasts the time asked for */
            const double t0 = lm_now_s();
            sink += rows[r].fn(n);
            dt = lm_now_s() - t0;
            if (dt >= secs || n > (1L << 40)) break;
            n *= dt > 0 ? (long)(secs / dt) + 2 : 16;
        }
        const double ips = 16.0 * (double)n / dt;
        printf("| %s | %.2f | %.1f |%s\n", rows[r].name, ips / 1e9, ips * rows[r].products / 1e9,
               sink == 12345.678 ? " " : "");
    }
    return 0;
}
#else
int main(void) {
    printf("not an x86-64 build: nothing to measure\n");
    return 0;
}
#endif

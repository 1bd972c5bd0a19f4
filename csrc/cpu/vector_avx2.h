// AVX2 + FMA vectors for the CPU kernels' hot loops, compiled for those
// instructions only inside functions marked DC_AVX2 and used only after
// has_avx2() said the processor has them: the rest of the library stays
// runnable on any x86-64.
#pragma once

#include <cstdlib>

#if defined(__x86_64__) || defined(_M_X64)
#define DELAYCONV_HAVE_AVX2_PATH 1
#include <immintrin.h>
#else
#define DELAYCONV_HAVE_AVX2_PATH 0
#endif

namespace delayconv {
namespace cpu {

#if DELAYCONV_HAVE_AVX2_PATH

#define DC_AVX2 __attribute__((target("avx2,fma")))
#define DC_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

// DELAYCONV_PORTABLE=1 in the environment forces the portable loops, which
// lets the tests hold both paths to the same answers.
inline bool has_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2") &&
                                __builtin_cpu_supports("fma") &&
                                std::getenv("DELAYCONV_PORTABLE") == nullptr;
  return supported;
}

// One 256-bit vector of T, and loads from T or from bool (a spike ring).
template <typename T>
struct Avx2;

template <>
struct Avx2<float> {
  using V = __m256;
  static constexpr int kLanes = 8;

  DC_AVX2_INLINE static V zero() {
    return _mm256_setzero_ps();
  }
  DC_AVX2_INLINE static V splat(float v) {
    return _mm256_set1_ps(v);
  }
  DC_AVX2_INLINE static V load(const float* p) {
    return _mm256_loadu_ps(p);
  }
  DC_AVX2_INLINE static V load(const bool* p) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
  }
  DC_AVX2_INLINE static V fmadd(V a, V b, V c) {
    return _mm256_fmadd_ps(a, b, c);
  }
  DC_AVX2_INLINE static void store(float* p, V v) {
    _mm256_storeu_ps(p, v);
  }
};

template <>
struct Avx2<double> {
  using V = __m256d;
  static constexpr int kLanes = 4;

  DC_AVX2_INLINE static V zero() {
    return _mm256_setzero_pd();
  }
  DC_AVX2_INLINE static V splat(double v) {
    return _mm256_set1_pd(v);
  }
  DC_AVX2_INLINE static V load(const double* p) {
    return _mm256_loadu_pd(p);
  }
  DC_AVX2_INLINE static V load(const bool* p) {
    int32_t four;
    __builtin_memcpy(&four, p, sizeof(four));
    const __m128i bytes = _mm_cvtsi32_si128(four);
    return _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(bytes));
  }
  DC_AVX2_INLINE static V fmadd(V a, V b, V c) {
    return _mm256_fmadd_pd(a, b, c);
  }
  DC_AVX2_INLINE static void store(double* p, V v) {
    _mm256_storeu_pd(p, v);
  }
};

#else

inline bool has_avx2() {
  return false;
}

#endif

}  // namespace cpu
}  // namespace delayconv

// The forward accumulation of one output plane with AVX2 and FMA, for unit
// stride along the width.
//
// The portable loop adds one tap to a whole output row at a time, loading and
// storing the row for every tap. Here a block of output rows and columns
// stays in registers while a group of taps is added, so a multiply-add costs
// one load, and the block is loaded and stored once per group. Inputs and
// outputs are padded so that no load or store needs a bound.
#pragma once

#include <algorithm>
#include <vector>

#include "cpu/bound_taps.h"
#include "cpu/taps.h"
#include "cpu/vector_avx2.h"

namespace delayconv {
namespace cpu {

#if DELAYCONV_HAVE_AVX2_PATH

// The register block: kRows output rows by kVecs vectors.
constexpr int kBlockRows = 4;
constexpr int kBlockVecs = 2;

// Output planes the AVX2 kernel accumulates into: rows and columns rounded up
// to whole register blocks, so that every load and store is a whole vector.
template <typename T>
struct PaddedOut {
  int64_t rows;
  int64_t pitch;

  explicit PaddedOut(const Planes& p) {
    const int64_t chunk = kBlockVecs * Avx2<T>::kLanes;
    rows = (p.out_h + kBlockRows - 1) / kBlockRows * kBlockRows;
    pitch = (p.out_w + chunk - 1) / chunk * chunk;
  }

  int64_t area() const {
    return rows * pitch;
  }
};

// Adds taps [first, last) to one padded output plane, a register block at a
// time. Rows and columns past the output's are computed from the staging
// buffer's padding and slack, and never copied out.
template <typename T>
DC_AVX2 void add_tap_group(const PaddedOut<T>& shape,
                           int64_t row_step,
                           const BoundTap<T>* first,
                           const BoundTap<T>* last,
                           T* out) {
  using A = Avx2<T>;
  using V = typename A::V;
  constexpr int64_t kChunk = kBlockVecs * A::kLanes;

  for (int64_t y0 = 0; y0 < shape.rows; y0 += kBlockRows) {
    for (int64_t x0 = 0; x0 < shape.pitch; x0 += kChunk) {
      T* corner = out + y0 * shape.pitch + x0;

      // Fully unrolled, so that the accumulators live in registers.
      V acc[kBlockRows][kBlockVecs];
#pragma GCC unroll 8
      for (int r = 0; r < kBlockRows; ++r) {
#pragma GCC unroll 8
        for (int v = 0; v < kBlockVecs; ++v) {
          acc[r][v] = A::load(corner + r * shape.pitch + v * A::kLanes);
        }
      }

      for (const BoundTap<T>* tap = first; tap != last; ++tap) {
        const V w = A::splat(tap->value);
        const T* in = tap->start + y0 * row_step + x0;
#pragma GCC unroll 8
        for (int r = 0; r < kBlockRows; ++r) {
#pragma GCC unroll 8
          for (int v = 0; v < kBlockVecs; ++v) {
            const V x = A::load(in + r * row_step + v * A::kLanes);
            acc[r][v] = A::fmadd(w, x, acc[r][v]);
          }
        }
      }

#pragma GCC unroll 8
      for (int r = 0; r < kBlockRows; ++r) {
#pragma GCC unroll 8
        for (int v = 0; v < kBlockVecs; ++v) {
          A::store(corner + r * shape.pitch + v * A::kLanes, acc[r][v]);
        }
      }
    }
  }
}

// Adds taps [first, last) to one padded output plane, many taps per pass (so
// that the plane is loaded and stored rarely) but few enough that their
// source rows stay in the first-level cache during the pass.
template <typename T>
DC_AVX2 void add_taps_avx2(const PaddedOut<T>& shape,
                           int64_t row_step,
                           const BoundTap<T>* first,
                           const BoundTap<T>* last,
                           T* out) {
  constexpr int64_t kMostPerPass = 32;
  const int64_t count = last - first;
  const int64_t passes = (count + kMostPerPass - 1) / kMostPerPass;
  for (int64_t k = 0; k < passes; ++k) {
    const BoundTap<T>* from = first + count * k / passes;
    const BoundTap<T>* to = first + count * (k + 1) / passes;
    add_tap_group<T>(shape, row_step, from, to, out);
  }
}

#else

// Never called: has_avx2() is false where this path is not compiled.
template <typename T>
struct PaddedOut {
  int64_t rows = 0;
  int64_t pitch = 0;
  explicit PaddedOut(const Planes&) {}
  int64_t area() const {
    return 0;
  }
};

template <typename T>
void add_taps_avx2(
    const PaddedOut<T>&, int64_t, const BoundTap<T>*, const BoundTap<T>*, T*) {}

#endif

}  // namespace cpu
}  // namespace delayconv

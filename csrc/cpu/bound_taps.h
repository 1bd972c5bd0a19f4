// Taps bound to the padded planes they read for one output plane.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/staging.h"
#include "cpu/taps.h"

namespace delayconv {
namespace cpu {

// Output (y, x) reads start[y * row_step + x * stride_w], in padded planes
// where every output position reads inside the plane.
template <typename T>
struct BoundTap {
  const T* start;
  T value;
};

// Binds taps [first, last) to the planes of one step; `bc` is batch * C and
// `padded_w` the staged planes' width.
template <typename T>
void bind_taps(const Planes& p,
               const StepPlanes<T>& step,
               int64_t padded_w,
               const Tap<T>* first,
               const Tap<T>* last,
               int64_t bc,
               std::vector<BoundTap<T>>& bound) {
  bound.clear();
  for (const Tap<T>* tap = first; tap != last; ++tap) {
    const T* plane = step.plane(tap->ring, tap->steps, bc + tap->c);
    const int64_t origin = tap->i * p.dil_h * padded_w + tap->j * p.dil_w;
    bound.push_back({plane + origin, tap->value});
  }
}

}  // namespace cpu
}  // namespace delayconv

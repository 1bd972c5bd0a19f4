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

// Binds taps [first, last) to the planes of step t; `bc` is batch * C.
template <typename T>
void bind_taps(const Planes& p,
               const Staged<T>& staged,
               const Tap<T>* first,
               const Tap<T>* last,
               int64_t t,
               int64_t bc,
               std::vector<BoundTap<T>>& bound) {
  bound.clear();
  for (const Tap<T>* tap = first; tap != last; ++tap) {
    const T* plane = staged.plane(tap->ring, tap->steps, t, bc + tap->c);
    const int64_t origin =
        tap->i * p.dil_h * staged.padded_w + tap->j * p.dil_w;
    bound.push_back({plane + origin, tap->value});
  }
}

}  // namespace cpu
}  // namespace delayconv

// The direct convolution over delayed observations on the CPU: the forward
// accumulation of output planes from their filters' taps.
//
// Every weight reads its own observation, so no dense convolution library can
// run these without one convolution per ring slot. Each kernel instead walks
// the taps of one plane and runs a contiguous multiply-add over output rows,
// a loop the compiler vectorizes.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/bound_taps.h"
#include "cpu/direct_conv_avx2.h"
#include "cpu/sources.h"
#include "cpu/staging.h"
#include "cpu/taps.h"

namespace delayconv {
namespace cpu {

// Adds taps [first, last) to one output plane: the portable loop, for any
// stride.
template <typename T>
void add_taps(const Planes& p,
              int64_t row_step,
              const BoundTap<T>* first,
              const BoundTap<T>* last,
              T* out) {
  for (const BoundTap<T>* tap = first; tap != last; ++tap) {
    for (int64_t y = 0; y < p.out_h; ++y) {
      const T* row = tap->start + y * row_step;
      T* o = out + y * p.out_w;
      if (p.stride_w == 1) {
        for (int64_t x = 0; x < p.out_w; ++x) {
          o[x] += tap->value * row[x];
        }
      } else {
        for (int64_t x = 0; x < p.out_w; ++x) {
          o[x] += tap->value * row[x * p.stride_w];
        }
      }
    }
  }
}

// Filters whose output planes one task accumulates together: they share the
// task's pass over the input channels, whose observations stay in cache
// while every filter of the block reads them.
constexpr int64_t kFilterBlock = 16;

// The planes of filters [f_lo, f_hi) of one (t, b), accumulated channel by
// channel: the portable loop, into the output itself.
template <typename T>
void block_portable(const StepShape& s,
                    const Planes& p,
                    const TapTable<T>& table,
                    const Staged<T>& staged,
                    int64_t t,
                    int64_t b,
                    int64_t f_lo,
                    int64_t f_hi,
                    std::vector<BoundTap<T>>& bound,
                    T* planes) {
  const int64_t out_area = p.out_h * p.out_w;
  const int64_t row_step = p.stride_h * staged.padded_w;
  const StepPlanes<T> step =
      planes_of_step(staged, table.readouts, s.records, t);
  std::fill(planes + f_lo * out_area, planes + f_hi * out_area, T(0));
  for (int64_t c = 0; c < s.channels; ++c) {
    for (int64_t f = f_lo; f < f_hi; ++f) {
      const auto& taps = table.per_filter[f];
      const auto& starts = table.channel_begin[f];
      bind_taps(p,
                step,
                staged.padded_w,
                taps.data() + starts[c],
                taps.data() + starts[c + 1],
                b * s.channels,
                bound);
      add_taps<T>(p,
                  row_step,
                  bound.data(),
                  bound.data() + bound.size(),
                  planes + f * out_area);
    }
  }
}

// The same with AVX2, into padded scratch planes copied out at the end.
template <typename T>
void block_avx2(const StepShape& s,
                const Planes& p,
                const TapTable<T>& table,
                const Staged<T>& staged,
                int64_t t,
                int64_t b,
                int64_t f_lo,
                int64_t f_hi,
                std::vector<BoundTap<T>>& bound,
                std::vector<T>& scratch,
                T* planes) {
  const PaddedOut<T> shape(p);
  const int64_t row_step = p.stride_h * staged.padded_w;
  const StepPlanes<T> step =
      planes_of_step(staged, table.readouts, s.records, t);
  // A few channels per pass over an output plane: a small kernel has few
  // taps per channel, and each pass loads and stores the plane once.
  const int64_t channels_per_pass =
      std::max<int64_t>(1, 32 / (s.kernel_h * s.kernel_w));
  scratch.assign((f_hi - f_lo) * shape.area(), T(0));
  for (int64_t c = 0; c < s.channels; c += channels_per_pass) {
    const int64_t c_end = std::min(s.channels, c + channels_per_pass);
    for (int64_t f = f_lo; f < f_hi; ++f) {
      const auto& taps = table.per_filter[f];
      const auto& starts = table.channel_begin[f];
      bind_taps(p,
                step,
                staged.padded_w,
                taps.data() + starts[c],
                taps.data() + starts[c_end],
                b * s.channels,
                bound);
      add_taps_avx2<T>(shape,
                       row_step,
                       bound.data(),
                       bound.data() + bound.size(),
                       scratch.data() + (f - f_lo) * shape.area());
    }
  }

  for (int64_t f = f_lo; f < f_hi; ++f) {
    const T* from = scratch.data() + (f - f_lo) * shape.area();
    T* to = planes + f * p.out_h * p.out_w;
    for (int64_t y = 0; y < p.out_h; ++y) {
      std::copy(from + y * shape.pitch,
                from + y * shape.pitch + p.out_w,
                to + y * p.out_w);
    }
  }
}

// Output planes of `steps` steps: out[t, b, f] = sum over the taps of filter
// f of value * observation, plus the bias and the overbound constant.
//
// A task owns the planes of a block of filters for one (t, b) and walks the
// input channels in the outer loop: the observations of one channel (a few
// kilobytes each) stay in cache while every filter of the block reads them.
template <typename T>
void forward_planes(const StepShape& s,
                    const Planes& p,
                    const TapTable<T>& table,
                    const Staged<T>& staged,
                    int64_t steps,
                    const T* bias,
                    T* out) {
  const int64_t out_area = p.out_h * p.out_w;
  const int64_t blocks = (s.filters + kFilterBlock - 1) / kFilterBlock;
  const int64_t tasks = steps * s.batch * blocks;
  const bool fast = p.stride_w == 1 && has_avx2();

  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<BoundTap<T>> bound;
    std::vector<T> scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task % blocks;
      const int64_t tb = task / blocks;
      const int64_t f_lo = block * kFilterBlock;
      const int64_t f_hi = std::min(s.filters, f_lo + kFilterBlock);
      const int64_t b = tb % s.batch;
      const int64_t t = tb / s.batch;
      T* planes = out + (tb * s.filters) * out_area;
      if (fast) {
        block_avx2<T>(
            s, p, table, staged, t, b, f_lo, f_hi, bound, scratch, planes);
      } else {
        block_portable<T>(s, p, table, staged, t, b, f_lo, f_hi, bound, planes);
      }

      for (int64_t f = f_lo; f < f_hi; ++f) {
        const T shift = table.constant[f] + (bias != nullptr ? bias[f] : T(0));
        if (shift != T(0)) {
          T* o = planes + f * out_area;
          for (int64_t e = 0; e < out_area; ++e) {
            o[e] += shift;
          }
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace delayconv

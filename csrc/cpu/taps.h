// The CPU kernels' view of a delayed convolution: every weight becomes one or
// two "taps", each a coefficient on the observation some steps back of one
// readout ring.
#pragma once

#include <algorithm>
#include <vector>

#include "selection.h"
#include "step_args.h"

namespace delayconv {
namespace cpu {

// Output positions [lo, hi) whose input position x * stride - pad + offset
// lies inside [0, size): the rest read the zero padding.
struct Span {
  int64_t lo;
  int64_t hi;
};

inline Span valid_span(int64_t out_size,
                       int64_t in_size,
                       int64_t stride,
                       int64_t pad,
                       int64_t offset) {
  const int64_t first = pad - offset;
  int64_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const int64_t last = in_size - 1 + pad - offset;
  int64_t hi = last < 0 ? 0 : last / stride + 1;
  lo = std::min(lo, out_size);
  hi = std::max(std::min(hi, out_size), lo);
  return {lo, hi};
}

// The layout of a convolution's planes, from its shape and arguments.
struct Planes {
  int64_t height, width, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;

  Planes(const StepArgs& args, const StepShape& s)
      : height(s.height),
        width(s.width),
        out_h(s.out_h),
        out_w(s.out_w),
        stride_h(args.stride[0]),
        stride_w(args.stride[1]),
        pad_h(args.padding[0]),
        pad_w(args.padding[1]),
        dil_h(args.dilation[0]),
        dil_w(args.dilation[1]) {}

  Span rows(int64_t i) const {
    return valid_span(out_h, height, stride_h, pad_h, i * dil_h);
  }

  Span cols(int64_t j) const {
    return valid_span(out_w, width, stride_w, pad_w, j * dil_w);
  }

  // Input row and column offset read by output row y through kernel (i, j).
  int64_t in_row(int64_t y, int64_t i) const {
    return y * stride_h - pad_h + i * dil_h;
  }

  int64_t col_offset(int64_t j) const {
    return j * dil_w - pad_w;
  }
};

// One weight's coefficient on one observation: readout ring `ring`, `steps`
// back from the newest, input channel `c` at kernel offset (i, j), `filter`;
// `rows` and `cols` are the output positions it reaches inside the input.
template <typename T>
struct Tap {
  int64_t ring;
  int64_t steps;
  int64_t filter;
  int64_t c;
  int64_t i;
  int64_t j;
  T value;
  Span rows;
  Span cols;
};

// Taps grouped by filter, and per filter the constant that weights whose
// delay lies beyond the maximum contribute (weight times the overbound).
template <typename T>
// Taps of filter f reading input channel c are per_filter[f][k] for k in
// [channel_begin[f][c], channel_begin[f][c + 1]).
struct TapTable {
  int readouts;  // readout rings the taps read
  std::vector<std::vector<Tap<T>>> per_filter;
  std::vector<std::vector<int64_t>> channel_begin;
  std::vector<T> constant;
};

// The kernel offset of weight n = (c, i, j) of a filter.
struct KernelIndex {
  int64_t c;
  int64_t i;
  int64_t j;
};

inline KernelIndex kernel_index(const StepShape& s, int64_t n) {
  const int64_t area = s.kernel_h * s.kernel_w;
  return {n / area, (n / s.kernel_w) % s.kernel_h, n % s.kernel_w};
}

// Builds the taps of every weight from its delay; a tap's value is the weight
// times its coefficient. Without delays (`delay` null) every weight reads the
// newest observation.
template <typename T>
TapTable<T> build_taps(const StepArgs& args,
                       const StepShape& s,
                       const T* weight,
                       const T* delay) {
  const ReadoutParams<T> readout = args.readout<T>();
  const T step_time = static_cast<T>(args.step_time);
  const T max_delay = static_cast<T>(args.max_delay);
  const T tolerance = static_cast<T>(args.tolerance);
  const int rings = readout_rings(args.kind);
  const int64_t per_filter = s.channels * s.kernel_h * s.kernel_w;
  const Planes planes(args, s);

  TapTable<T> table;
  table.readouts = rings;
  table.per_filter.resize(s.filters);
  table.channel_begin.resize(s.filters);
  table.constant.assign(s.filters, T(0));
  for (int64_t f = 0; f < s.filters; ++f) {
    auto& taps = table.per_filter[f];
    taps.reserve(per_filter * rings);
    for (int64_t n = 0; n < per_filter; ++n) {
      const int64_t index = f * per_filter + n;
      const KernelIndex k = kernel_index(s, n);
      const T w = weight[index];
      const Location<T> where =
          delay == nullptr
              ? Location<T>{0, 0, T(0), true}
              : locate(
                    delay[index], step_time, max_delay, tolerance, s.records);
      if (!where.inbound && args.current_overbound.has_value()) {
        table.constant[f] += w * static_cast<T>(*args.current_overbound);
        continue;
      }
      const Span rows = planes.rows(k.i);
      const Span cols = planes.cols(k.j);
      for (int ring = 0; ring < rings; ++ring) {
        const TapPair<T> pair = tap_pair(readout, where, ring);
        if (pair.older != T(0)) {
          taps.push_back({ring,
                          where.older,
                          f,
                          k.c,
                          k.i,
                          k.j,
                          w * pair.older,
                          rows,
                          cols});
        }
        if (pair.newer != T(0) && where.newer != where.older) {
          taps.push_back({ring,
                          where.newer,
                          f,
                          k.c,
                          k.i,
                          k.j,
                          w * pair.newer,
                          rows,
                          cols});
        }
      }
    }

    // Taps reading the same input channel run back to back: the kernels
    // add one channel's taps at a time.
    std::stable_sort(
        taps.begin(), taps.end(), [](const Tap<T>& a, const Tap<T>& b) {
          if (a.c != b.c) {
            return a.c < b.c;
          }
          return a.ring != b.ring ? a.ring < b.ring : a.steps < b.steps;
        });
    auto& begin = table.channel_begin[f];
    begin.assign(s.channels + 1, 0);
    for (const Tap<T>& tap : taps) {
      ++begin[tap.c + 1];
    }
    for (int64_t c = 0; c < s.channels; ++c) {
      begin[c + 1] += begin[c];
    }
  }
  return table;
}

// Where the observation `steps` back from the newest of step `t` lives: in a
// ring (slot (head - steps) mod R, t = 0) or in a history of observations
// held oldest first (index newest + t - steps).
struct Observations {
  int64_t newest;
  int64_t records;  // R for a ring; 0 for a history, which never wraps
  int64_t size;     // elements of one observation, B x C x H x W

  int64_t index(int64_t t, int64_t steps) const {
    return records > 0 ? slot_back(newest, steps, records) : newest + t - steps;
  }

  // Element offset of plane bc = (batch, channel), `area` elements each, of
  // that observation. All in 64 bits: a ring or a history of a large layer
  // passes 2^31 elements long before memory runs out.
  int64_t plane_offset(int64_t t,
                       int64_t steps,
                       int64_t bc,
                       int64_t area) const {
    return index(t, steps) * size + bc * area;
  }
};

}  // namespace cpu
}  // namespace delayconv

// Direct convolutions over delayed observations on the CPU: the forward
// accumulation and the two correlations its gradients need.
//
// Every weight reads its own observation, so no dense convolution library can
// run these without one convolution per ring slot. Each kernel instead walks
// the taps of one plane and runs a contiguous multiply-add over output rows,
// a loop the compiler vectorizes.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/taps.h"

namespace delayconv {
namespace cpu {

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

// Source observations of the readout rings: ring a, and ring b of the double
// exponential. S is bool for a delta synapse's spikes, else the compute type.
template <typename S>
struct Sources {
  const S* a;
  const S* b;
  Observations where;

  // The H x W plane bc = (batch, channel) of readout ring `ring`, `steps`
  // back from the newest observation of step t.
  const S* plane(
      int64_t ring, int64_t steps, int64_t t, int64_t bc, int64_t area) const {
    const S* base = ring == 0 ? a : b;
    return base + where.index(t, steps) * where.size + bc * area;
  }
};

// out[x] += value * source[x * stride + offset] for x in [lo, hi).
template <typename T, typename S>
inline void axpy_row(
    T* out, const S* source, T value, Span x, int64_t stride, int64_t offset) {
  if (stride == 1) {
    const S* shifted = source + offset;
    for (int64_t e = x.lo; e < x.hi; ++e) {
      out[e] += value * static_cast<T>(shifted[e]);
    }
    return;
  }
  for (int64_t e = x.lo; e < x.hi; ++e) {
    out[e] += value * static_cast<T>(source[e * stride + offset]);
  }
}

// Output planes of `steps` steps: out[t, b, f] = sum over the taps of filter
// f of value * observation, plus the bias and the overbound constant.
template <typename T, typename S>
void forward_planes(const StepShape& s,
                    const Planes& p,
                    const TapTable<T>& table,
                    const Sources<S>& sources,
                    int64_t steps,
                    const T* bias,
                    T* out) {
  const int64_t area = p.height * p.width;
  const int64_t out_area = p.out_h * p.out_w;
  const int64_t tasks = steps * s.batch * s.filters;

  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t f = task % s.filters;
      const int64_t b = (task / s.filters) % s.batch;
      const int64_t t = task / (s.filters * s.batch);
      T* o = out + task * out_area;
      std::fill(o, o + out_area, T(0));

      for (const Tap<T>& tap : table.per_filter[f]) {
        const S* source =
            sources.plane(tap.ring, tap.steps, t, b * s.channels + tap.c, area);
        const Span rows = p.rows(tap.i);
        const Span cols = p.cols(tap.j);
        const int64_t offset = p.col_offset(tap.j);
        for (int64_t y = rows.lo; y < rows.hi; ++y) {
          const S* row = source + p.in_row(y, tap.i) * p.width;
          axpy_row(o + y * p.out_w, row, tap.value, cols, p.stride_w, offset);
        }
      }

      const T shift = table.constant[f] + (bias != nullptr ? bias[f] : T(0));
      if (shift != T(0)) {
        for (int64_t e = 0; e < out_area; ++e) {
          o[e] += shift;
        }
      }
    }
  });
}

// grad[t', b, c] += value * G[t' + steps, b, f] through the tap's kernel
// offset: the transpose of forward_planes, for the gradient of every
// observation the sequence made (t' in [0, T)). Taps come grouped by input
// channel, so each task owns its target planes and no write is shared.
template <typename T>
void transposed_planes(const StepShape& s,
                       const Planes& p,
                       const std::vector<std::vector<Tap<T>>>& per_channel,
                       int readouts,
                       int64_t steps,
                       const T* grad_out,
                       T* grad) {
  const int64_t area = p.height * p.width;
  const int64_t out_area = p.out_h * p.out_w;
  const int64_t ring_size = steps * s.batch * s.channels * area;

  at::parallel_for(
      0, steps * s.batch * s.channels, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t c = task % s.channels;
          const int64_t b = (task / s.channels) % s.batch;
          const int64_t t = task / (s.channels * s.batch);
          for (int r = 0; r < readouts; ++r) {
            std::fill(grad + r * ring_size + task * area,
                      grad + r * ring_size + (task + 1) * area,
                      T(0));
          }

          for (const Tap<T>& tap : per_channel[c]) {
            const int64_t later = t + tap.steps;
            if (later >= steps) {
              continue;
            }
            const T* g =
                grad_out +
                ((later * s.batch + b) * s.filters + tap.filter) * out_area;
            T* target = grad + tap.ring * ring_size + task * area;
            const Span rows = p.rows(tap.i);
            const Span cols = p.cols(tap.j);
            const int64_t offset = p.col_offset(tap.j);
            for (int64_t y = rows.lo; y < rows.hi; ++y) {
              T* row = target + p.in_row(y, tap.i) * p.width + offset;
              const T* g_row = g + y * p.out_w;
              for (int64_t x = cols.lo; x < cols.hi; ++x) {
                row[x * p.stride_w] += tap.value * g_row[x];
              }
            }
          }
        }
      });
}

// sum over the valid output positions of g[y, x] * source[in(y), in(x)] for
// a kernel offset (i, j): one term of a weight's gradient.
template <typename T, typename S>
inline T correlate_plane(
    const Planes& p, const T* g, const S* source, int64_t i, int64_t j) {
  const Span rows = p.rows(i);
  const Span cols = p.cols(j);
  const int64_t offset = p.col_offset(j);
  T sum = T(0);
  for (int64_t y = rows.lo; y < rows.hi; ++y) {
    const S* row = source + p.in_row(y, i) * p.width + offset;
    const T* g_row = g + y * p.out_w;
    if (p.stride_w == 1) {
#pragma omp simd reduction(+ : sum)
      for (int64_t x = cols.lo; x < cols.hi; ++x) {
        sum += g_row[x] * static_cast<T>(row[x]);
      }
    } else {
      for (int64_t x = cols.lo; x < cols.hi; ++x) {
        sum += g_row[x] * static_cast<T>(row[x * p.stride_w]);
      }
    }
  }
  return sum;
}

// One correlation a weight's gradients need: of filter f's output gradient
// with readout ring `ring` observed `steps` back, through offset (c, i, j).
struct Correlation {
  int64_t filter;
  int64_t c;
  int64_t i;
  int64_t j;
  int64_t ring;
  int64_t steps;
};

// Every correlation over all steps and batch elements: the sums behind the
// gradients of the weights and delays. Tasks split the (t, b) pairs; each
// thread accumulates privately (in the accumulate type) and the partial sums
// are added at the end.
template <typename T, typename S, typename Acc>
std::vector<Acc> correlations(const StepShape& s,
                              const Planes& p,
                              const std::vector<Correlation>& wanted,
                              const std::vector<int64_t>& first_of_filter,
                              const Sources<S>& sources,
                              int64_t steps,
                              const T* grad_out) {
  const int64_t area = p.height * p.width;
  const int64_t out_area = p.out_h * p.out_w;
  const int64_t tasks = steps * s.batch;
  const int threads = std::max<int>(1, at::get_num_threads());
  const int64_t chunk = (tasks + threads - 1) / threads;
  std::vector<std::vector<Acc>> partial(threads);

  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t worker = begin; worker < end; ++worker) {
      std::vector<Acc> sums(wanted.size(), Acc(0));
      const int64_t last = std::min(tasks, (worker + 1) * chunk);
      for (int64_t task = worker * chunk; task < last; ++task) {
        const int64_t b = task % s.batch;
        const int64_t t = task / s.batch;
        for (int64_t f = 0; f < s.filters; ++f) {
          const T* g = grad_out + (task * s.filters + f) * out_area;
          for (int64_t k = first_of_filter[f]; k < first_of_filter[f + 1];
               ++k) {
            const Correlation& w = wanted[k];
            const S* source =
                sources.plane(w.ring, w.steps, t, b * s.channels + w.c, area);
            sums[k] += correlate_plane(p, g, source, w.i, w.j);
          }
        }
      }
      partial[worker] = std::move(sums);
    }
  });

  std::vector<Acc> total(wanted.size(), Acc(0));
  for (const auto& sums : partial) {
    for (size_t k = 0; k < sums.size(); ++k) {
      total[k] += sums[k];
    }
  }
  return total;
}

}  // namespace cpu
}  // namespace delayconv

// Correlations of the output gradient with observations: the sums behind the
// gradients of the weights and the delays.
//
// Each correlation is sum over (t, b, y, x) of G[t, b, f, y, x] times the
// observation a weight of filter f reads at (t, b) through its kernel offset.
// Tasks split the (t, b) pairs. Within a task a filter's gradient plane is
// copied once into a zero-padded scratch row pitch, then read for every
// correlation of that filter; with AVX2, up to eight correlations share each
// load of it. Each task accumulates privately (in the accumulate type) and
// the partial sums are added at the end.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/staging.h"
#include "cpu/taps.h"
#include "cpu/vector_avx2.h"

namespace delayconv {
namespace cpu {

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

// The gradient plane's scratch pitch: whole vectors of eight floats (or four
// doubles, twice as many), zeros past the output's width.
inline int64_t gradient_pitch(int64_t out_w) {
  return (out_w + 7) / 8 * 8;
}

// sum over y, x of g[y * pitch + x] * source[y * row_step + x * stride].
template <typename T>
T correlate_portable(const Planes& p,
                     int64_t pitch,
                     int64_t row_step,
                     const T* g,
                     const T* source) {
  T sum = T(0);
  for (int64_t y = 0; y < p.out_h; ++y) {
    const T* g_row = g + y * pitch;
    const T* row = source + y * row_step;
    if (p.stride_w == 1) {
#pragma omp simd reduction(+ : sum)
      for (int64_t x = 0; x < p.out_w; ++x) {
        sum += g_row[x] * row[x];
      }
    } else {
      for (int64_t x = 0; x < p.out_w; ++x) {
        sum += g_row[x] * row[x * p.stride_w];
      }
    }
  }
  return sum;
}

#if DELAYCONV_HAVE_AVX2_PATH

// Up to eight correlations of one gradient plane at once (unit stride):
// sums[k] += sum over y, x of g[y, x] * sources[k][y * row_step + x].
template <typename T, typename Acc>
DC_AVX2 void correlate_avx2(const Planes& p,
                            int64_t pitch,
                            int64_t row_step,
                            const T* g,
                            const T* const* sources,
                            int count,
                            Acc* sums) {
  using A = Avx2<T>;
  using V = typename A::V;
  constexpr int kMost = 8;
  V acc[kMost];
#pragma GCC unroll 8
  for (int k = 0; k < kMost; ++k) {
    acc[k] = A::zero();
  }
  for (int64_t y = 0; y < p.out_h; ++y) {
    const T* g_row = g + y * pitch;
    const int64_t offset = y * row_step;
    for (int64_t x = 0; x < pitch; x += A::kLanes) {
      const V gv = A::load(g_row + x);
#pragma GCC unroll 8
      for (int k = 0; k < kMost; ++k) {
        if (k < count) {
          acc[k] = A::fmadd(gv, A::load(sources[k] + offset + x), acc[k]);
        }
      }
    }
  }
  for (int k = 0; k < count; ++k) {
    alignas(32) T lanes[A::kLanes];
    A::store(lanes, acc[k]);
    Acc total = Acc(0);
    for (int e = 0; e < A::kLanes; ++e) {
      total += lanes[e];
    }
    sums[k] += total;
  }
}

#else

template <typename T, typename Acc>
void correlate_avx2(
    const Planes&, int64_t, int64_t, const T*, const T* const*, int, Acc*) {}

#endif

// Every wanted correlation, summed over all steps and batch elements.
// `first_of_filter[f]` is the first of filter f's correlations in `wanted`.
template <typename T, typename Acc>
std::vector<Acc> correlations(const StepShape& s,
                              const Planes& p,
                              const std::vector<Correlation>& wanted,
                              const std::vector<int64_t>& first_of_filter,
                              const Staged<T>& staged,
                              int64_t steps,
                              const T* grad_out) {
  const int64_t out_area = p.out_h * p.out_w;
  const int64_t pitch = gradient_pitch(p.out_w);
  const int64_t row_step = p.stride_h * staged.padded_w;
  const int64_t tasks = steps * s.batch;
  const bool fast = p.stride_w == 1 && has_avx2();
  const int threads = std::max<int>(1, at::get_num_threads());
  const int64_t chunk = (tasks + threads - 1) / threads;
  std::vector<std::vector<Acc>> partial(threads);

  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> g(p.out_h * pitch, T(0));
    std::vector<const T*> sources;
    for (int64_t worker = begin; worker < end; ++worker) {
      std::vector<Acc> sums(wanted.size(), Acc(0));
      const int64_t last = std::min(tasks, (worker + 1) * chunk);
      for (int64_t task = worker * chunk; task < last; ++task) {
        const int64_t b = task % s.batch;
        const int64_t t = task / s.batch;
        for (int64_t f = 0; f < s.filters; ++f) {
          const T* plane = grad_out + (task * s.filters + f) * out_area;
          for (int64_t y = 0; y < p.out_h; ++y) {
            std::copy(plane + y * p.out_w,
                      plane + (y + 1) * p.out_w,
                      g.data() + y * pitch);
          }
          sources.clear();
          for (int64_t k = first_of_filter[f]; k < first_of_filter[f + 1];
               ++k) {
            const Correlation& w = wanted[k];
            sources.push_back(
                staged.plane(w.ring, w.steps, t, b * s.channels + w.c) +
                w.i * p.dil_h * staged.padded_w + w.j * p.dil_w);
          }
          const int64_t first = first_of_filter[f];
          const int64_t count = first_of_filter[f + 1] - first;
          for (int64_t k = 0; k < count; k += 8) {
            const int group = static_cast<int>(std::min<int64_t>(8, count - k));
            if (fast) {
              correlate_avx2<T, Acc>(p,
                                     pitch,
                                     row_step,
                                     g.data(),
                                     sources.data() + k,
                                     group,
                                     sums.data() + first + k);
              continue;
            }
            for (int e = 0; e < group; ++e) {
              sums[first + k + e] += correlate_portable<T>(
                  p, pitch, row_step, g.data(), sources[k + e]);
            }
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

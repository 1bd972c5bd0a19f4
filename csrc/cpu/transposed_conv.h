// The transposed delayed convolution on the CPU: the gradient of every
// observation a sequence made, from the gradient of its outputs.
//
// With unit strides the transpose is itself a direct convolution: an input
// pixel receives from the output positions that read it, which sit at a fixed
// offset per tap. The output gradient is then copied once into zero-padded
// planes and every target plane accumulated with the forward pass's kernels
// (a gather; AVX2 where available). Other strides take a scatter loop. Either
// way a task owns its target planes, so no write is shared.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/bound_taps.h"
#include "cpu/direct_conv.h"
#include "cpu/direct_conv_avx2.h"
#include "cpu/taps.h"

namespace delayconv {
namespace cpu {

// grad[t', b, c] += value * G[t' + steps, b, f] through the tap's kernel
// offset, by scattering each output gradient: any stride.
template <typename T>
void scatter_planes(const StepShape& s,
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

// The output gradient in zero-padded planes, T x B x F x rows x pitch, laid
// so that target pixel (h, w) of tap (i, j) reads element
// (h + top + pad_h - i * dil_h, w + left + pad_w - j * dil_w).
template <typename T>
struct PaddedGradient {
  std::vector<T> data;
  int64_t top;
  int64_t left;
  int64_t rows;
  int64_t pitch;

  PaddedGradient(const StepShape& s,
                 const Planes& p,
                 int64_t steps,
                 const T* grad) {
    top = std::max<int64_t>(0, (s.kernel_h - 1) * p.dil_h - p.pad_h);
    left = std::max<int64_t>(0, (s.kernel_w - 1) * p.dil_w - p.pad_w);
    // Room for whole register blocks past the target's last row and column.
    rows = top + p.pad_h + p.height + 4;
    pitch = left + p.pad_w + p.width + 16;
    const int64_t planes = steps * s.batch * s.filters;
    data.assign(planes * rows * pitch + 64, T(0));
    at::parallel_for(0, planes, 16, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const T* from = grad + k * p.out_h * p.out_w;
        T* to = data.data() + k * rows * pitch + top * pitch + left;
        for (int64_t y = 0; y < p.out_h; ++y) {
          std::copy(
              from + y * p.out_w, from + (y + 1) * p.out_w, to + y * pitch);
        }
      }
    });
  }

  const T* tap_start(const StepShape& s,
                     const Planes& p,
                     int64_t t,
                     int64_t b,
                     const Tap<T>& tap) const {
    const int64_t plane = (t * s.batch + b) * s.filters + tap.filter;
    const int64_t row = top + p.pad_h - tap.i * p.dil_h;
    const int64_t col = left + p.pad_w - tap.j * p.dil_w;
    return data.data() + plane * rows * pitch + row * pitch + col;
  }
};

// The gather for unit strides: target plane (ring, t', b, c) accumulates
// value * G[t' + steps, b, f] shifted by each tap's offset.
template <typename T>
void gather_planes(const StepShape& s,
                   const Planes& p,
                   const std::vector<std::vector<Tap<T>>>& per_channel,
                   int readouts,
                   int64_t steps,
                   const T* grad_out,
                   T* grad) {
  const PaddedGradient<T> padded(s, p, steps, grad_out);
  Planes target = p;  // the kernels' "output" is now an input-sized plane
  target.out_h = p.height;
  target.out_w = p.width;
  target.stride_h = 1;
  target.stride_w = 1;
  const int64_t area = p.height * p.width;
  const int64_t ring_size = steps * s.batch * s.channels * area;
  const bool fast = has_avx2();

  at::parallel_for(
      0, steps * s.batch * s.channels, 1, [&](int64_t begin, int64_t end) {
        std::vector<BoundTap<T>> bound;
        std::vector<T> scratch;
        const PaddedOut<T> shape(target);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t c = task % s.channels;
          const int64_t b = (task / s.channels) % s.batch;
          const int64_t t = task / (s.channels * s.batch);
          for (int r = 0; r < readouts; ++r) {
            bound.clear();
            for (const Tap<T>& tap : per_channel[c]) {
              if (tap.ring == r && t + tap.steps < steps) {
                bound.push_back(
                    {padded.tap_start(s, p, t + tap.steps, b, tap), tap.value});
              }
            }
            T* out = grad + r * ring_size + task * area;
            const BoundTap<T>* first = bound.data();
            const BoundTap<T>* last = first + bound.size();
            if (!fast) {
              std::fill(out, out + area, T(0));
              add_taps<T>(target, padded.pitch, first, last, out);
              continue;
            }
            scratch.assign(shape.area(), T(0));
            add_taps_avx2<T>(shape, padded.pitch, first, last, scratch.data());
            for (int64_t y = 0; y < p.height; ++y) {
              std::copy(scratch.data() + y * shape.pitch,
                        scratch.data() + y * shape.pitch + p.width,
                        out + y * p.width);
            }
          }
        }
      });
}

// The observations' gradient (readouts x T x B x C x H x W) from the output
// gradient, by the gather where the strides allow it.
template <typename T>
void transposed_planes(const StepShape& s,
                       const Planes& p,
                       const std::vector<std::vector<Tap<T>>>& per_channel,
                       int readouts,
                       int64_t steps,
                       const T* grad_out,
                       T* grad) {
  if (p.stride_h == 1 && p.stride_w == 1) {
    gather_planes<T>(s, p, per_channel, readouts, steps, grad_out, grad);
  } else {
    scatter_planes<T>(s, p, per_channel, readouts, steps, grad_out, grad);
  }
}

}  // namespace cpu
}  // namespace delayconv

// The convolution over per-weight delays on CUDA, shared by the step and the
// sequence operators. Two launches on the current stream:
// 1. delay_taps_forward_kernel: one block per filter turns each weight's
//    delay into its taps (the offsets of the older and newer observation it
//    reads in each readout ring, and their coefficients times the weight) and
//    sums the overbound constant of the weights beyond the maximum delay.
// 2. delayed_conv_forward_kernel: one thread per output element; the block's
//    threads share one filter and stage its taps through shared memory in
//    chunks, then each thread accumulates its taps in the accumulate type.
//
// The observations are read from a ring (the step: slot (head - k) mod R
// holds the one k steps back, with the head read on the GPU) or from a
// history (the sequence: the observation k steps back of step t is index
// R + t - k). Observation t + 1 of a history follows observation t at one
// observation's distance, so a sequence of T steps convolves T x B images as
// one batch: the taps hold the offsets of step 0, and an image's offset
// (t x B + b) x C x H x W adds t observations.
//
// Everything here is internal to each including file; see common.cuh.
#pragma once

#include <ATen/AccumulateType.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <climits>
#include <optional>

#include "cuda/common.cuh"
#include "selection.h"
#include "step_args.h"

namespace delayconv {
namespace cuda {
namespace {

// Sizes as the kernels take them (StepArgs and StepShape hold host-only
// members). `images` counts the B x C x H x W images convolved in one
// launch: B for a step, T x B for a sequence.
struct Geometry {
  int64_t batch, channels, height, width;
  int64_t filters, kernel_h, kernel_w;
  int64_t out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t records;
  int64_t images;
};

inline Geometry make_geometry(const StepArgs& args,
                              const StepShape& s,
                              int64_t steps) {
  return {s.batch,
          s.channels,
          s.height,
          s.width,
          s.filters,
          s.kernel_h,
          s.kernel_w,
          s.out_h,
          s.out_w,
          args.stride[0],
          args.stride[1],
          args.padding[0],
          args.padding[1],
          args.dilation[0],
          args.dilation[1],
          s.records,
          steps * s.batch};
}

// How delays are read, in the compute type O.
template <typename O>
struct Selection {
  ReadoutParams<O> readout;
  O step_time;
  O max_delay;
  O tolerance;
  O overbound;
  bool has_overbound;
};

template <typename O>
Selection<O> make_selection(const StepArgs& args) {
  return {args.readout<O>(),
          static_cast<O>(args.step_time),
          static_cast<O>(args.max_delay),
          static_cast<O>(args.tolerance),
          static_cast<O>(args.current_overbound.value_or(0.0)),
          args.current_overbound.has_value()};
}

// The observation `steps` back of the first image: a ring slot when the
// head is given, else a history index.
__device__ __forceinline__ int64_t observation_back(const int64_t* ring_head,
                                                    int64_t head,
                                                    int64_t steps,
                                                    int64_t records) {
  return ring_head != nullptr ? slot_back(head, steps, records)
                              : records - steps;
}

// One weight's reads: the offsets of its older and newer observation in
// each readout ring, counted from pixel (0, 0) of image 0 with the kernel
// offset included, and their coefficients times the weight. A zero
// coefficient means the observation is not read.
template <typename acc_t, int kRings>
struct DeviceTap {
  int64_t older;
  int64_t newer;
  acc_t value[kRings][2];
  int32_t row;  // i * dilation_h
  int32_t col;  // j * dilation_w
};

// One block per filter: the taps of its C x kH x kW weights, and the sum of
// weight times overbound over the weights whose delay lies beyond the
// maximum (they read that constant instead of the ring). `ring_head` is
// null for a history.
template <typename scalar_t, int kRings>
__global__ void delay_taps_forward_kernel(
    const scalar_t* __restrict__ weight,
    const scalar_t* __restrict__ delay,
    const int64_t* __restrict__ ring_head,
    Selection<at::opmath_type<scalar_t>> sel,
    Geometry g,
    DeviceTap<at::acc_type<scalar_t, true>, kRings>* __restrict__ taps,
    at::acc_type<scalar_t, true>* __restrict__ constant) {
  using O = at::opmath_type<scalar_t>;
  using acc_t = at::acc_type<scalar_t, true>;
  __shared__ acc_t partial[kThreads];

  const int64_t f = blockIdx.x;
  const int64_t area = g.kernel_h * g.kernel_w;
  const int64_t count = g.channels * area;
  const int64_t plane = g.height * g.width;
  const int64_t observation = g.batch * g.channels * plane;
  // A head outside [0, R) cannot be reported from here without a
  // synchronization; it is taken modulo R instead.
  const int64_t head =
      ring_head != nullptr ? slot_back(*ring_head, 0, g.records) : 0;

  acc_t outside = acc_t(0);
  for (int64_t n = threadIdx.x; n < count; n += kThreads) {
    const int64_t index = f * count + n;
    const int64_t c = n / area;
    const int64_t i = (n / g.kernel_w) % g.kernel_h;
    const int64_t j = n % g.kernel_w;
    const acc_t w = static_cast<acc_t>(weight[index]);
    const Location<O> where = locate(static_cast<O>(delay[index]),
                                     sel.step_time,
                                     sel.max_delay,
                                     sel.tolerance,
                                     g.records);

    DeviceTap<acc_t, kRings> tap;
    tap.row = static_cast<int32_t>(i * g.dilation_h);
    tap.col = static_cast<int32_t>(j * g.dilation_w);
    const int64_t pixel = c * plane + tap.row * g.width + tap.col;
    const int64_t older =
        observation_back(ring_head, head, where.older, g.records);
    const int64_t newer =
        observation_back(ring_head, head, where.newer, g.records);
    tap.older = older * observation + pixel;
    tap.newer = newer * observation + pixel;
    const bool replaced = !where.inbound && sel.has_overbound;
    if (replaced) {
      outside += w * static_cast<acc_t>(sel.overbound);
    }
    for (int ring = 0; ring < kRings; ++ring) {
      const TapPair<O> pair = tap_pair(sel.readout, where, ring);
      const bool read_newer = !replaced && newer != older;
      tap.value[ring][0] = replaced ? acc_t(0) : w * pair.older;
      tap.value[ring][1] = read_newer ? w * pair.newer : acc_t(0);
    }
    taps[index] = tap;
  }

  // A fixed-order tree sum, so that the constant is the same every step.
  partial[threadIdx.x] = outside;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      partial[threadIdx.x] += partial[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    constant[f] = partial[0];
  }
}

// One thread per output element: thread e of filter f's blocks computes
// out[image, f, y, x] with e = (image * Hout + y) * Wout + x. The filter's
// taps pass through shared memory kThreads at a time; every thread of the
// block takes part in loading them, active or not, so that the barriers are
// uniform. Spikes read as 0 or 1 (the delta model's coefficients carry
// Q / dt).
template <typename scalar_t, typename source_t, int kRings>
__global__ void delayed_conv_forward_kernel(
    const source_t* __restrict__ ring_a,
    const source_t* __restrict__ ring_b,
    const DeviceTap<at::acc_type<scalar_t, true>, kRings>* __restrict__ taps,
    const at::acc_type<scalar_t, true>* __restrict__ constant,
    const scalar_t* __restrict__ bias,
    Geometry g,
    int64_t tiles,
    scalar_t* __restrict__ out) {
  using acc_t = at::acc_type<scalar_t, true>;
  __shared__ DeviceTap<acc_t, kRings> chunk[kThreads];

  const int64_t f = blockIdx.x / tiles;
  const int64_t e = (blockIdx.x % tiles) * kThreads + threadIdx.x;
  const int64_t out_plane = g.out_h * g.out_w;
  const bool active = e < g.images * out_plane;
  const int64_t image = e / out_plane;
  const int64_t y0 = (e % out_plane) / g.out_w * g.stride_h - g.pad_h;
  const int64_t x0 = e % g.out_w * g.stride_w - g.pad_w;
  const int64_t pixel =
      image * g.channels * g.height * g.width + y0 * g.width + x0;
  const source_t* rings[2] = {ring_a, ring_b};

  const int64_t count = g.channels * g.kernel_h * g.kernel_w;
  const DeviceTap<acc_t, kRings>* own = taps + f * count;
  acc_t acc = acc_t(0);
  for (int64_t start = 0; start < count; start += kThreads) {
    const int n = static_cast<int>(std::min<int64_t>(kThreads, count - start));
    __syncthreads();  // the previous chunk has been read
    if (threadIdx.x < n) {
      chunk[threadIdx.x] = own[start + threadIdx.x];
    }
    __syncthreads();
    for (int t = 0; active && t < n; ++t) {
      const DeviceTap<acc_t, kRings>& tap = chunk[t];
      const int64_t y = y0 + tap.row;
      const int64_t x = x0 + tap.col;
      if (y < 0 || y >= g.height || x < 0 || x >= g.width) {
        continue;  // zero padding
      }
#pragma unroll
      for (int ring = 0; ring < kRings; ++ring) {
        // The coefficients are the same for every thread: no divergence.
        if (tap.value[ring][0] != acc_t(0)) {
          acc += tap.value[ring][0] *
                 static_cast<acc_t>(rings[ring][tap.older + pixel]);
        }
        if (tap.value[ring][1] != acc_t(0)) {
          acc += tap.value[ring][1] *
                 static_cast<acc_t>(rings[ring][tap.newer + pixel]);
        }
      }
    }
  }

  if (active) {
    const acc_t shift =
        constant[f] + (bias != nullptr ? static_cast<acc_t>(bias[f]) : 0);
    const int64_t at = (image * g.filters + f) * out_plane + e % out_plane;
    out[at] = static_cast<scalar_t>(acc + shift);
  }
}

// Builds the taps and runs the per-weight delay convolution into `out`
// (images x F x Hout x Wout); `ring_head` is null for a history.
template <typename scalar_t, typename source_t, int kRings>
void launch_delayed_conv(const char* op,
                         const StepArgs& args,
                         const Geometry& g,
                         const source_t* ring_a,
                         const source_t* ring_b,
                         const int64_t* ring_head,
                         const at::Tensor& weight,
                         const at::Tensor& delay,
                         const std::optional<at::Tensor>& bias,
                         at::Tensor& out) {
  using acc_t = at::acc_type<scalar_t, true>;
  using Tap = DeviceTap<acc_t, kRings>;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto options = weight.options();

  const at::Tensor tap_bytes =
      at::empty({static_cast<int64_t>(weight.numel() * sizeof(Tap))},
                options.dtype(at::kByte));
  const at::Tensor constant = at::empty(
      {g.filters}, options.dtype(c10::CppTypeToScalarType<acc_t>::value));
  Tap* taps = reinterpret_cast<Tap*>(tap_bytes.data_ptr<uint8_t>());
  delay_taps_forward_kernel<scalar_t, kRings>
      <<<g.filters, kThreads, 0, stream>>>(
          weight.const_data_ptr<scalar_t>(),
          delay.const_data_ptr<scalar_t>(),
          ring_head,
          make_selection<at::opmath_type<scalar_t>>(args),
          g,
          taps,
          constant.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const int64_t tiles = ceil_div(g.images * g.out_h * g.out_w, kThreads);
  TORCH_CHECK(tiles * g.filters <= INT_MAX,
              op,
              ": the output (",
              out.sizes(),
              ") needs more than 2^31 - 1 thread blocks; split the batch",
              " or the sequence");
  delayed_conv_forward_kernel<scalar_t, source_t, kRings>
      <<<tiles * g.filters, kThreads, 0, stream>>>(
          ring_a,
          ring_b,
          taps,
          constant.const_data_ptr<acc_t>(),
          bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr,
          g,
          tiles,
          out.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Picks the readout rings of the model from the spikes (R' x B x C x H x W)
// and recorded currents (K x R' x B x C x H x W) of a ring or a history:
// spikes for the delta model, one or two recorded currents otherwise.
template <typename scalar_t>
void delayed_conv(const char* op,
                  const StepArgs& args,
                  const Geometry& g,
                  const at::Tensor& spikes,
                  const at::Tensor& currents,
                  const int64_t* ring_head,
                  const at::Tensor& weight,
                  const at::Tensor& delay,
                  const std::optional<at::Tensor>& bias,
                  at::Tensor& out) {
  if (args.kind == kDelta) {
    const bool* a = spikes.const_data_ptr<bool>();
    launch_delayed_conv<scalar_t, bool, 1>(
        op, args, g, a, a, ring_head, weight, delay, bias, out);
    return;
  }
  const scalar_t* a = currents.const_data_ptr<scalar_t>();
  if (args.kind == kDoubleExponential) {
    const scalar_t* b = a + currents.numel() / currents.size(0);
    launch_delayed_conv<scalar_t, scalar_t, 2>(
        op, args, g, a, b, ring_head, weight, delay, bias, out);
    return;
  }
  launch_delayed_conv<scalar_t, scalar_t, 1>(
      op, args, g, a, a, ring_head, weight, delay, bias, out);
}

}  // namespace
}  // namespace cuda
}  // namespace delayconv

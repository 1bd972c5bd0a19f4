// CUDA kernels of the sequence's backward pass, from the history it returned.
//
// The same three parts as the CPU kernel, each run only when its gradient is
// wanted, on the current stream:
// - sequence_reads_backward_kernel: one thread per weight locates its delay
//   once (selection.h): the steps back of the observations its forward read
//   takes and their coefficients, the two neighbours and derivatives that
//   define the slope of the read (read_slope), and the overbound value
//   where the weight reads that instead.
// - the observations' gradient (sequence_observations_backward_kernel): the
//   transposed delayed convolution written as a gather, one thread per
//   element (t', b, c, h, w) of the T new observations, summing over the
//   reads that take it and the output positions they reach; no atomics.
//   Then sequence_inputs_backward_kernel carries it back through the synapse
//   dynamics, one thread per element, last step first (synapse_rule.h).
// - the weights' and delays' gradients: sequence_weights_backward_kernel
//   correlates the output gradient with the observations each weight reads,
//   one block per weight and chunk of the T x B x Hout x Wout positions,
//   reduced within the block; sequence_weights_reduce_backward_kernel adds
//   the chunks in a fixed order, so that the result does not depend on
//   scheduling, and the overbound term.
// The bias gradient is ATen's sum of the output gradient.

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <climits>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/delayed_conv.cuh"
#include "selection.h"
#include "step_args.h"
#include "synapse_rule.h"

namespace delayconv {
namespace cuda {
namespace {

constexpr const char* kBackward = "delayconv.sequence_backward";

enum Wanted { kInputs = 0, kInjected, kWeight, kBias, kDelay };

// Positions of the output gradient one thread of the weights' correlation
// visits per chunk, on average.
constexpr int64_t kPositionsPerThread = 16;

// Chunks of the positions cannot outnumber the grid's second dimension.
constexpr int64_t kMaxChunks = 65535;

// Elements of the weights' partial sums (two per weight and chunk) past which
// chunks grow longer rather than more numerous: wide layers over long
// sequences would otherwise need a buffer many times the output gradient.
constexpr int64_t kMaxPartial = int64_t{1} << 26;

// How one weight reads the history, in steps back from the newest
// observation of each step: its forward read (older, newer) with the
// coefficients d(read)/d(weight), the neighbours of the read's slope with
// the coefficients d(read)/d(delay), and the overbound value that replaces
// the read beyond the maximum delay (0 where the weight reads the ring). A
// zero coefficient means the observation is not read.
template <typename acc_t, int kRings>
struct WeightReads {
  int64_t steps[4];  // read older, read newer, slope older, slope newer
  acc_t read[kRings][2];
  acc_t slope[kRings][2];
  acc_t overbound;
};

// One thread per weight; `delay` is null without delays (every weight reads
// the newest observation) and `with_slope` asks for the delay's slope.
template <typename scalar_t, int kRings>
__global__ void sequence_reads_backward_kernel(
    const scalar_t* __restrict__ delay,
    Selection<at::opmath_type<scalar_t>> sel,
    int64_t records,
    int64_t weights,
    bool with_slope,
    WeightReads<at::acc_type<scalar_t, true>, kRings>* __restrict__ reads) {
  using O = at::opmath_type<scalar_t>;
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       w < weights;
       w += stride) {
    const O d = delay != nullptr ? static_cast<O>(delay[w]) : O(0);
    const Location<O> where =
        delay != nullptr
            ? locate(d, sel.step_time, sel.max_delay, sel.tolerance, records)
            : Location<O>{0, 0, O(0), true};
    const bool replaced = !where.inbound && sel.has_overbound;

    WeightReads<acc_t, kRings> r;
    r.steps[0] = where.older;
    r.steps[1] = where.newer;
    r.steps[2] = 1;
    r.steps[3] = 0;
    r.overbound = replaced ? static_cast<acc_t>(sel.overbound) : acc_t(0);
    for (int ring = 0; ring < kRings; ++ring) {
      const TapPair<O> pair = tap_pair(sel.readout, where, ring);
      const bool newer = !replaced && where.newer != where.older;
      r.read[ring][0] = replaced ? acc_t(0) : static_cast<acc_t>(pair.older);
      r.read[ring][1] = newer ? static_cast<acc_t>(pair.newer) : acc_t(0);
      r.slope[ring][0] = acc_t(0);
      r.slope[ring][1] = acc_t(0);
      if (delay != nullptr && with_slope) {
        const Slope<O> slope =
            read_slope(sel.readout, d, sel.max_delay, records, ring);
        r.steps[2] = slope.older;
        r.steps[3] = slope.newer;
        r.slope[ring][0] = static_cast<acc_t>(slope.d_older);
        r.slope[ring][1] = static_cast<acc_t>(slope.d_newer);
      }
    }
    reads[w] = r;
  }
}

// ---------------------------------------------------------------------------
// Observations and inputs

// A weight's forward read as the gather stages it: its filter, kernel
// offset, the steps back of its two observations and their coefficients
// times the weight.
template <typename acc_t, int kRings>
struct GatherTap {
  int64_t steps[2];
  acc_t value[kRings][2];
  int32_t filter;
  int32_t row;  // i * dilation_h
  int32_t col;  // j * dilation_w
};

// One thread per element (t', b, c, h, w) of the T new observations:
// grad[ring, t', b, c, h, w] = sum over the weights (f, c, i, j) whose read
// of ring `ring` takes observation t' for some later step t = t' + k, of
// their coefficient times grad_outputs[t, b, f, y, x], where (y, x) is the
// output position whose input position through (i, j) is (h, w). The
// F x kH x kW weights of channel c pass through shared memory kThreads at a
// time; blocks are per channel, so all their threads stage the same ones.
template <typename scalar_t, int kRings>
__global__ void sequence_observations_backward_kernel(
    const scalar_t* __restrict__ grad_outputs,
    const scalar_t* __restrict__ weight,
    const WeightReads<at::acc_type<scalar_t, true>, kRings>* __restrict__ reads,
    Geometry g,
    int64_t steps,
    int64_t tiles,
    at::acc_type<scalar_t, true>* __restrict__ grad) {
  using acc_t = at::acc_type<scalar_t, true>;
  __shared__ GatherTap<acc_t, kRings> chunk[kThreads];

  const int64_t c = blockIdx.x / tiles;
  const int64_t e = (blockIdx.x % tiles) * kThreads + threadIdx.x;
  const int64_t plane = g.height * g.width;
  const int64_t out_plane = g.out_h * g.out_w;
  const bool active = e < g.images * plane;
  const int64_t image = e / plane;  // t' * B + b
  const int64_t first = image / g.batch;
  const int64_t b = image % g.batch;
  // The position in the padded input, where output (y, x) reads through
  // kernel offset (row, col) at (y * stride_h + row, x * stride_w + col).
  const int64_t padded_h = (e % plane) / g.width + g.pad_h;
  const int64_t padded_w = e % g.width + g.pad_w;

  const int64_t area = g.kernel_h * g.kernel_w;
  const int64_t count = g.filters * area;
  acc_t acc[kRings];
#pragma unroll
  for (int ring = 0; ring < kRings; ++ring) {
    acc[ring] = acc_t(0);
  }
  for (int64_t start = 0; start < count; start += kThreads) {
    const int n = static_cast<int>(std::min<int64_t>(kThreads, count - start));
    __syncthreads();  // the previous chunk has been read
    if (threadIdx.x < n) {
      const int64_t k = start + threadIdx.x;
      const int64_t f = k / area;
      const int64_t index = (f * g.channels + c) * area + k % area;
      const WeightReads<acc_t, kRings>& r = reads[index];
      const acc_t wv = static_cast<acc_t>(weight[index]);
      GatherTap<acc_t, kRings> tap;
      tap.filter = static_cast<int32_t>(f);
      tap.row = static_cast<int32_t>(k % area / g.kernel_w * g.dilation_h);
      tap.col = static_cast<int32_t>(k % g.kernel_w * g.dilation_w);
      for (int m = 0; m < 2; ++m) {
        tap.steps[m] = r.steps[m];
        for (int ring = 0; ring < kRings; ++ring) {
          tap.value[ring][m] = wv * r.read[ring][m];
        }
      }
      chunk[threadIdx.x] = tap;
    }
    __syncthreads();

    for (int k = 0; active && k < n; ++k) {
      const GatherTap<acc_t, kRings>& tap = chunk[k];
      // The output position reading (h, w) through this kernel offset.
      const int64_t ys = padded_h - tap.row;
      const int64_t xs = padded_w - tap.col;
      if (ys < 0 || xs < 0 || ys % g.stride_h != 0 || xs % g.stride_w != 0) {
        continue;
      }
      const int64_t y = ys / g.stride_h;
      const int64_t x = xs / g.stride_w;
      if (y >= g.out_h || x >= g.out_w) {
        continue;
      }
      for (int m = 0; m < 2; ++m) {
        const int64_t t = first + tap.steps[m];
        bool reads = false;
#pragma unroll
        for (int ring = 0; ring < kRings; ++ring) {
          reads = reads || tap.value[ring][m] != acc_t(0);
        }
        if (!reads || t >= steps) {
          continue;  // not read, or read by a step after the sequence
        }
        const int64_t at =
            ((t * g.batch + b) * g.filters + tap.filter) * out_plane +
            y * g.out_w + x;
        const acc_t go = static_cast<acc_t>(grad_outputs[at]);
#pragma unroll
        for (int ring = 0; ring < kRings; ++ring) {
          acc[ring] += tap.value[ring][m] * go;
        }
      }
    }
  }

  if (active) {
    const int64_t ring_size = g.images * g.channels * plane;
    const int64_t at = (image * g.channels + c) * plane + e % plane;
#pragma unroll
    for (int ring = 0; ring < kRings; ++ring) {
      grad[ring * ring_size + at] = acc[ring];
    }
  }
}

// One thread per element of an observation: the recurrence of the synapse
// model run backwards from step T - 1 to 0. `observed` holds the
// observations' gradient per readout ring (kRings x T x size); either output
// may be null.
template <typename scalar_t, int kRings>
__global__ void sequence_inputs_backward_kernel(
    const at::acc_type<scalar_t, true>* __restrict__ observed,
    SynapseRule<at::acc_type<scalar_t, true>> u,
    int64_t size,
    int64_t steps,
    scalar_t* __restrict__ grad_inputs,
    scalar_t* __restrict__ grad_injected) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < size;
       e += stride) {
    SynapseState<acc_t> carried{acc_t(0), acc_t(0)};
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t at = t * size + e;
      const acc_t g_a = observed[at];
      const acc_t g_b = kRings > 1 ? observed[steps * size + at] : acc_t(0);
      const acc_t gx = input_gradient(u, g_a, g_b, carried);
      if (grad_inputs != nullptr) {
        grad_inputs[at] = static_cast<scalar_t>(gx);
      }
      if (grad_injected != nullptr) {
        grad_injected[at] = static_cast<scalar_t>(g_a);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Weights and delays

// The sum of `value` over the block, in thread 0: warp shuffles, then one
// warp over the warps' sums, in a fixed order. `shared` holds a value per
// warp; every thread of the block must call this.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t value, acc_t* shared) {
  constexpr int kWarps = kThreads / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  if (threadIdx.x % 32 == 0) {
    shared[threadIdx.x / 32] = value;
  }
  __syncthreads();
  value = threadIdx.x < kWarps ? shared[threadIdx.x] : acc_t(0);
  if (threadIdx.x < 32) {
    for (int offset = kWarps / 2; offset > 0; offset /= 2) {
      value += __shfl_down_sync(0xffffffffu, value, offset);
    }
  }
  return value;
}

// Block (weight, chunk): over the chunk's positions (t, b, y, x) of the
// output gradient, sums grad_outputs[t, b, f, y, x] times the observations
// the weight (f, c, i, j) reads at the input position of (y, x), weighted by
// their coefficients for the weight's and the delay's gradient. Writes the
// two sums to partial[weight, chunk].
template <typename scalar_t, typename source_t, int kRings>
__global__ void sequence_weights_backward_kernel(
    const scalar_t* __restrict__ grad_outputs,
    const source_t* __restrict__ history_a,
    const source_t* __restrict__ history_b,
    const WeightReads<at::acc_type<scalar_t, true>, kRings>* __restrict__ reads,
    Geometry g,
    int64_t per_chunk,
    at::acc_type<scalar_t, true>* __restrict__ partial) {
  using acc_t = at::acc_type<scalar_t, true>;
  __shared__ acc_t warp_sums[2][kThreads / 32];

  const int64_t index = blockIdx.x;
  const int64_t area = g.kernel_h * g.kernel_w;
  const int64_t f = index / (g.channels * area);
  const int64_t c = index / area % g.channels;
  const int64_t row = index % area / g.kernel_w * g.dilation_h - g.pad_h;
  const int64_t col = index % g.kernel_w * g.dilation_w - g.pad_w;
  const WeightReads<acc_t, kRings> r = reads[index];
  const source_t* history[2] = {history_a, history_b};

  const int64_t plane = g.height * g.width;
  const int64_t out_plane = g.out_h * g.out_w;
  const int64_t observation = g.batch * g.channels * plane;
  const int64_t positions = g.images * out_plane;
  const int64_t begin = blockIdx.y * per_chunk;
  const int64_t end = std::min(positions, begin + per_chunk);
  acc_t sum_weight = acc_t(0);
  acc_t sum_delay = acc_t(0);
  for (int64_t p = begin + threadIdx.x; p < end; p += kThreads) {
    const int64_t image = p / out_plane;  // t * B + b
    const int64_t y = p % out_plane / g.out_w;
    const int64_t x = p % g.out_w;
    const int64_t in_y = y * g.stride_h + row;
    const int64_t in_x = x * g.stride_w + col;
    if (in_y < 0 || in_y >= g.height || in_x < 0 || in_x >= g.width) {
      continue;  // zero padding
    }
    const acc_t go = static_cast<acc_t>(
        grad_outputs[(image * g.filters + f) * out_plane + p % out_plane]);
    // Observation k steps back of step t is history index R + t - k.
    const int64_t t = image / g.batch;
    const int64_t pixel =
        (image % g.batch * g.channels + c) * plane + in_y * g.width + in_x;
    const int64_t base = (g.records + t) * observation + pixel;
#pragma unroll
    for (int ring = 0; ring < kRings; ++ring) {
      for (int m = 0; m < 2; ++m) {
        if (r.read[ring][m] != acc_t(0)) {
          const acc_t seen = static_cast<acc_t>(
              history[ring][base - r.steps[m] * observation]);
          sum_weight += r.read[ring][m] * go * seen;
        }
        if (r.slope[ring][m] != acc_t(0)) {
          const acc_t seen = static_cast<acc_t>(
              history[ring][base - r.steps[2 + m] * observation]);
          sum_delay += r.slope[ring][m] * go * seen;
        }
      }
    }
  }

  sum_weight = block_sum(sum_weight, warp_sums[0]);
  sum_delay = block_sum(sum_delay, warp_sums[1]);
  if (threadIdx.x == 0) {
    const int64_t at = (index * gridDim.y + blockIdx.y) * 2;
    partial[at] = sum_weight;
    partial[at + 1] = sum_delay;
  }
}

// One thread per weight: adds its chunks in order, and the overbound term (a
// weight reading the overbound value contributes it at every output position
// of its filter); the delay's gradient is the weight times its sum. Either
// output may be null.
template <typename scalar_t, int kRings>
__global__ void sequence_weights_reduce_backward_kernel(
    const at::acc_type<scalar_t, true>* __restrict__ partial,
    const WeightReads<at::acc_type<scalar_t, true>, kRings>* __restrict__ reads,
    const at::acc_type<scalar_t, true>* __restrict__ filter_sums,
    const scalar_t* __restrict__ weight,
    int64_t weights,
    int64_t per_filter,
    int64_t chunks,
    scalar_t* __restrict__ grad_weight,
    scalar_t* __restrict__ grad_delay) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       w < weights;
       w += stride) {
    acc_t sum_weight = reads[w].overbound * filter_sums[w / per_filter];
    acc_t sum_delay = acc_t(0);
    for (int64_t k = 0; k < chunks; ++k) {
      sum_weight += partial[(w * chunks + k) * 2];
      sum_delay += partial[(w * chunks + k) * 2 + 1];
    }
    if (grad_weight != nullptr) {
      grad_weight[w] = static_cast<scalar_t>(sum_weight);
    }
    if (grad_delay != nullptr) {
      grad_delay[w] =
          static_cast<scalar_t>(static_cast<acc_t>(weight[w]) * sum_delay);
    }
  }
}

// ---------------------------------------------------------------------------
// Host side

// The gradients being computed, and the operands they come from.
struct Gradients {
  at::Tensor inputs;    // T x B x C x H x W, or undefined
  at::Tensor injected;  // T x B x C x H x W, or undefined
  at::Tensor weight;    // like the weight, or undefined
  at::Tensor delay;     // like the weight, or undefined
};

struct History {
  at::Tensor grad_outputs;  // T x B x F x Hout x Wout, contiguous
  at::Tensor spikes;        // (R + T) x B x C x H x W
  at::Tensor currents;      // K x (R + T) x B x C x H x W
  at::Tensor weight;        // contiguous
  std::optional<at::Tensor> delay;
};

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
at::Tensor bytes_for(int64_t count, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(count * sizeof(T))},
                   like.options().dtype(at::kByte));
}

template <typename scalar_t, int kRings>
using Reads = WeightReads<at::acc_type<scalar_t, true>, kRings>;

template <typename scalar_t, int kRings>
void launch_reads(const StepArgs& args,
                  const StepShape& s,
                  const History& h,
                  bool with_slope,
                  Reads<scalar_t, kRings>* reads) {
  const int64_t weights = h.weight.numel();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  sequence_reads_backward_kernel<scalar_t, kRings>
      <<<stride_blocks(weights), kThreads, 0, stream>>>(
          h.delay.has_value() ? h.delay->const_data_ptr<scalar_t>() : nullptr,
          make_selection<at::opmath_type<scalar_t>>(args),
          s.records,
          weights,
          with_slope,
          reads);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The observations' gradient, then the inputs' and the injected currents'.
template <typename scalar_t, int kRings>
void input_grads(const StepArgs& args,
                 const StepShape& s,
                 int64_t steps,
                 const History& h,
                 const Reads<scalar_t, kRings>* reads,
                 Gradients& grads) {
  using acc_t = at::acc_type<scalar_t, true>;
  const Geometry g = make_geometry(args, s, steps);
  const int64_t size = s.batch * s.channels * s.height * s.width;
  const at::Tensor observed = at::empty(
      {kRings * steps * size},
      h.weight.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const auto stream = c10::cuda::getCurrentCUDAStream();

  const int64_t tiles = ceil_div(g.images * s.height * s.width, kThreads);
  TORCH_CHECK(tiles * s.channels <= INT_MAX,
              kBackward,
              ": the inputs' gradient (",
              steps,
              " x ",
              size,
              " elements) needs more than 2^31 - 1 thread blocks; split ",
              "the batch or the sequence");
  sequence_observations_backward_kernel<scalar_t, kRings>
      <<<tiles * s.channels, kThreads, 0, stream>>>(
          h.grad_outputs.const_data_ptr<scalar_t>(),
          h.weight.const_data_ptr<scalar_t>(),
          reads,
          g,
          steps,
          tiles,
          observed.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  sequence_inputs_backward_kernel<scalar_t, kRings>
      <<<stride_blocks(size), kThreads, 0, stream>>>(
          observed.const_data_ptr<acc_t>(),
          args.rule<acc_t>(),
          size,
          steps,
          data_or_null<scalar_t>(grads.inputs),
          data_or_null<scalar_t>(grads.injected));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// partial[weight, chunk, 2]: the correlations of every weight, per chunk of
// the positions; `chunks` receives their number.
template <typename scalar_t, typename source_t, int kRings>
at::Tensor correlate(const StepArgs& args,
                     const StepShape& s,
                     int64_t steps,
                     const History& h,
                     const source_t* history_a,
                     const source_t* history_b,
                     const Reads<scalar_t, kRings>* reads,
                     int64_t& chunks) {
  using acc_t = at::acc_type<scalar_t, true>;
  const Geometry g = make_geometry(args, s, steps);
  const int64_t weights = h.weight.numel();
  const int64_t positions = g.images * s.out_h * s.out_w;
  chunks = std::min(
      {ceil_div(positions, kThreads * kPositionsPerThread),
       kMaxChunks,
       std::max<int64_t>(1, kMaxPartial / std::max<int64_t>(1, 2 * weights))});
  const int64_t per_chunk = chunks > 0 ? ceil_div(positions, chunks) : 0;
  const at::Tensor partial = at::empty(
      {weights * chunks * 2},
      h.weight.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  if (chunks == 0) {
    return partial;
  }
  TORCH_CHECK(weights <= INT_MAX,
              kBackward,
              ": the weight has ",
              weights,
              " elements, more than the 2^31 - 1 thread blocks its gradient ",
              "launches");

  const dim3 grid(static_cast<unsigned>(weights),
                  static_cast<unsigned>(chunks));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  sequence_weights_backward_kernel<scalar_t, source_t, kRings>
      <<<grid, kThreads, 0, stream>>>(h.grad_outputs.const_data_ptr<scalar_t>(),
                                      history_a,
                                      history_b,
                                      reads,
                                      g,
                                      per_chunk,
                                      partial.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return partial;
}

// The weights' and delays' gradients.
template <typename scalar_t, int kRings>
void weight_grads(const StepArgs& args,
                  const StepShape& s,
                  int64_t steps,
                  const History& h,
                  const Reads<scalar_t, kRings>* reads,
                  Gradients& grads) {
  using acc_t = at::acc_type<scalar_t, true>;
  int64_t chunks = 0;
  at::Tensor partial;
  if (args.kind == kDelta) {
    const bool* spikes = h.spikes.const_data_ptr<bool>();
    partial = correlate<scalar_t, bool, kRings>(
        args, s, steps, h, spikes, spikes, reads, chunks);
  } else {
    const scalar_t* a = h.currents.const_data_ptr<scalar_t>();
    const scalar_t* b = a + h.currents.numel() / h.currents.size(0);
    partial = correlate<scalar_t, scalar_t, kRings>(
        args, s, steps, h, a, kRings > 1 ? b : a, reads, chunks);
  }

  // d(out)/d(weight) of a weight reading the overbound value is that value
  // at every output position of its filter.
  const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor filter_sums =
      at::sum(h.grad_outputs, {0, 1, 3, 4}, false, acc_type);
  const int64_t weights = h.weight.numel();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  sequence_weights_reduce_backward_kernel<scalar_t, kRings>
      <<<stride_blocks(weights), kThreads, 0, stream>>>(
          partial.const_data_ptr<acc_t>(),
          reads,
          filter_sums.const_data_ptr<acc_t>(),
          h.weight.const_data_ptr<scalar_t>(),
          weights,
          weights / s.filters,
          chunks,
          data_or_null<scalar_t>(grads.weight),
          data_or_null<scalar_t>(grads.delay));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int kRings>
void backward_typed(const StepArgs& args,
                    const StepShape& s,
                    int64_t steps,
                    const History& h,
                    Gradients& grads) {
  const bool inputs = grads.inputs.defined() || grads.injected.defined();
  const bool weights = grads.weight.defined() || grads.delay.defined();
  const bool empty = h.weight.numel() == 0;
  if (empty || (!inputs && !weights)) {
    return;
  }
  const at::Tensor reads_bytes =
      bytes_for<Reads<scalar_t, kRings>>(h.weight.numel(), h.weight);
  auto* reads = reinterpret_cast<Reads<scalar_t, kRings>*>(
      reads_bytes.data_ptr<uint8_t>());
  launch_reads<scalar_t, kRings>(args, s, h, grads.delay.defined(), reads);

  // The delta model's spikes take no gradient from the observations.
  const int64_t size = s.batch * s.channels * s.height * s.width;
  if (inputs && args.kind != kDelta && steps * size > 0) {
    input_grads<scalar_t, kRings>(args, s, steps, h, reads, grads);
  }
  if (weights) {
    weight_grads<scalar_t, kRings>(args, s, steps, h, reads, grads);
  }
}

// Allocates the gradients the mask asks for: zeros where nothing else will
// write them (the delta model's inputs, and a weight without elements).
Gradients wanted_grads(const StepArgs& args,
                       const StepShape& s,
                       int64_t steps,
                       const History& h,
                       const std::array<bool, 5>& mask) {
  const auto options = h.weight.options();
  const std::vector<int64_t> input_shape = {
      steps, s.batch, s.channels, s.height, s.width};
  const bool zero_inputs = args.kind == kDelta;
  const bool zero_weights = h.weight.numel() == 0;
  Gradients grads;
  if (mask[kInputs]) {
    grads.inputs = zero_inputs ? at::zeros(input_shape, options)
                               : at::empty(input_shape, options);
  }
  if (mask[kInjected] && args.kind == kDeltaPlus) {
    grads.injected = at::empty(input_shape, options);
  }
  if (mask[kWeight]) {
    grads.weight = zero_weights ? at::zeros(h.weight.sizes(), options)
                                : at::empty(h.weight.sizes(), options);
  }
  if (mask[kDelay] && h.delay.has_value()) {
    grads.delay = zero_weights ? at::zeros(h.weight.sizes(), options)
                               : at::empty(h.weight.sizes(), options);
  }
  return grads;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_backward(const StepArgs& args,
             const StepShape& s,
             int64_t steps,
             const History& h,
             const std::array<bool, 5>& mask) {
  Gradients grads = wanted_grads(args, s, steps, h, mask);
  const at::Tensor grad_bias =
      mask[kBias] ? h.grad_outputs.sum({0, 1, 3, 4}) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf,
      at::kBFloat16,
      h.weight.scalar_type(),
      "delayconv_sequence_backward_cuda",
      [&] {
        if (args.kind == kDoubleExponential) {
          backward_typed<scalar_t, 2>(args, s, steps, h, grads);
        } else {
          backward_typed<scalar_t, 1>(args, s, steps, h, grads);
        }
      });

  const auto options = h.weight.options();
  const auto or_empty = [&](const at::Tensor& t) {
    return t.defined() ? t : at::empty({0}, options);
  };
  return {or_empty(grads.inputs),
          or_empty(grads.injected),
          or_empty(grads.weight),
          or_empty(grad_bias),
          or_empty(grads.delay)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
sequence_backward_cuda(const at::Tensor& grad_outputs,
                       const at::Tensor& spike_history,
                       const at::Tensor& current_history,
                       const at::Tensor& weight,
                       const std::optional<at::Tensor>& delay,
                       DELAYCONV_CONFIG_PARAMS,
                       std::array<bool, 5> mask) {
  const StepArgs args = make_step_args(kBackward, DELAYCONV_CONFIG_ARGS);
  int64_t steps = 0;
  const StepShape s = check_history(kBackward,
                                    args,
                                    grad_outputs,
                                    spike_history,
                                    current_history,
                                    weight,
                                    delay,
                                    steps);
  check_cuda_weight(kBackward, weight);
  TORCH_CHECK(
      spike_history.is_contiguous() && current_history.is_contiguous(),
      kBackward,
      ": the histories must be contiguous, as the sequence returned them");

  const c10::cuda::CUDAGuard guard(weight.device());
  History h{grad_outputs.contiguous(),
            spike_history,
            current_history,
            weight.contiguous(),
            std::nullopt};
  if (delay.has_value()) {
    h.delay = delay->contiguous();
  }
  return run_backward(args, s, steps, h, mask);
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(delayconv, CUDA, m) {
  m.impl("sequence_backward", &cuda::sequence_backward_cuda);
}

}  // namespace delayconv

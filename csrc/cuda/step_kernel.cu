// CUDA kernels of the in-place step operator.
//
// One step is four launches on the current stream, in this order:
// 1. step_update_forward_kernel: the synapse update, one thread per input
//    element, writes the newest observation at slot (head + 1) % R. Every
//    thread reads the old head.
// 2. step_head_forward_kernel: one thread advances the head. Stream order
//    puts it after every block of the update, so no block can read a head
//    that was already advanced.
// 3. step_taps_forward_kernel: one block per filter turns each weight's delay
//    into its taps (ring offsets of the older and newer observation and their
//    coefficients times the weight) and sums the overbound constant.
// 4. step_conv_forward_kernel: one thread per output element (b, f, y, x);
//    the block's threads share one filter and stage its taps through shared
//    memory in chunks, then each thread accumulates its taps in the
//    accumulate type.
// The head lives on the GPU and is only ever read there: reading it on the
// host would synchronize the stream and break CUDA graph capture.
//
// Without delays the update also writes the newest current as an image and
// ATen's convolution (cuDNN) convolves it; launches 3 and 4 do not run. The
// CPU kernel also hands one shared delay to a dense convolution, but finding
// out that all delays are equal would copy a flag to the host every step, a
// synchronization; here the per-weight kernel handles that case as well.

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "selection.h"
#include "step_args.h"

namespace delayconv {
namespace cuda {
namespace {

constexpr const char* kStepInPlace = "delayconv.step_";

// Threads per block of every kernel; the convolution stages this many taps
// at a time in shared memory.
constexpr int kThreads = 256;

// Grid-stride launches need no more blocks than this to fill any GPU.
constexpr int64_t kMaxUpdateBlocks = 65536;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// ---------------------------------------------------------------------------
// Synapse update

// The synapse model's constants in the compute type O (float for the half
// types): the same values the CPU kernel computes in double and casts.
template <typename O>
struct UpdateParams {
  int64_t kind;
  O charge_per_step;  // Q / dt
  O decay_a;          // exp(-dt / tau_a)
  O decay_b;          // exp(-dt / tau_b)
  O jump;             // Q / tau, or Q / (tau_d - tau_r)
};

template <typename O>
UpdateParams<O> update_params(const StepArgs& args) {
  UpdateParams<O> u;
  u.kind = args.kind;
  u.charge_per_step = static_cast<O>(args.spike_charge / args.step_time);
  u.decay_a = args.kind >= kSingleExponential
                  ? static_cast<O>(std::exp(-args.step_time / args.tau_a))
                  : O(0);
  u.decay_b = args.kind == kDoubleExponential
                  ? static_cast<O>(std::exp(-args.step_time / args.tau_b))
                  : O(0);
  u.jump = args.kind == kSingleExponential
               ? static_cast<O>(args.spike_charge / args.tau_a)
               : static_cast<O>(args.spike_charge / (args.tau_a - args.tau_b));
  return u;
}

// A value rounded to the storage type and widened back. PyTorch rounds the
// result of every half-precision tensor operation, and the reference is a
// chain of such operations; for float and double this is the identity.
template <typename scalar_t, typename O>
__device__ __forceinline__ O stored(O value) {
  return static_cast<O>(static_cast<scalar_t>(value));
}

// One element of the update, term by term as the CPU kernel's update_ring:
// products rounded on their own (mul_rn), so that nvcc cannot fuse
// `previous * decay + jump * x` into one FMA.
template <typename scalar_t, typename O>
__device__ __forceinline__ void update_element(const UpdateParams<O>& u,
                                               O x,
                                               const scalar_t* injected,
                                               int64_t e,
                                               scalar_t* now_a,
                                               const scalar_t* was_a,
                                               scalar_t* now_b,
                                               const scalar_t* was_b,
                                               scalar_t* image) {
  O current = O(0);
  switch (u.kind) {
    case kDelta:
      current =
          stored<scalar_t>(mul_rn(x != O(0) ? O(1) : O(0), u.charge_per_step));
      break;
    case kDeltaPlus: {
      current = stored<scalar_t>(mul_rn(x, u.charge_per_step));
      if (injected != nullptr) {
        current = stored<scalar_t>(current + static_cast<O>(injected[e]));
      }
      now_a[e] = static_cast<scalar_t>(current);
      break;
    }
    case kSingleExponential: {
      const O kept =
          stored<scalar_t>(mul_rn(static_cast<O>(was_a[e]), u.decay_a));
      current = stored<scalar_t>(kept + stored<scalar_t>(mul_rn(u.jump, x)));
      now_a[e] = static_cast<scalar_t>(current);
      break;
    }
    default: {
      const O jump = stored<scalar_t>(mul_rn(u.jump, x));
      const O pos = stored<scalar_t>(
          stored<scalar_t>(mul_rn(static_cast<O>(was_a[e]), u.decay_a)) + jump);
      const O neg = stored<scalar_t>(
          stored<scalar_t>(mul_rn(static_cast<O>(was_b[e]), u.decay_b)) + jump);
      now_a[e] = static_cast<scalar_t>(pos);
      now_b[e] = static_cast<scalar_t>(neg);
      current = stored<scalar_t>(pos - neg);
      break;
    }
  }
  if (image != nullptr) {
    image[e] = static_cast<scalar_t>(current);
  }
}

// Writes the newest spikes and recorded currents at slot (head + 1) % R from
// those at slot head, and, where `image` is given, the newest synaptic
// current as a B x C x H x W image for a dense convolution. `input_t` is
// bool or scalar_t.
template <typename scalar_t, typename input_t>
__global__ void step_update_forward_kernel(
    const input_t* __restrict__ input,
    const scalar_t* __restrict__ injected,
    const int64_t* __restrict__ ring_head,
    bool* __restrict__ spike_ring,
    scalar_t* __restrict__ current_ring,
    scalar_t* __restrict__ image,
    UpdateParams<at::opmath_type<scalar_t>> u,
    int64_t size,
    int64_t records) {
  using O = at::opmath_type<scalar_t>;
  // A head outside [0, R) cannot be reported from here without a
  // synchronization; it is taken modulo R instead.
  const int64_t previous = slot_back(*ring_head, 0, records);
  const int64_t next = slot_back(previous, -1, records);
  const int64_t ring_size = records * size;
  bool* spikes = spike_ring + next * size;
  // The delta model records no current: its ring is empty and never read.
  scalar_t* now_a = current_ring ? current_ring + next * size : nullptr;
  const scalar_t* was_a =
      current_ring ? current_ring + previous * size : nullptr;

  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < size;
       e += step) {
    const O x = static_cast<O>(input[e]);
    spikes[e] = x != O(0);
    update_element<scalar_t, O>(u,
                                x,
                                injected,
                                e,
                                now_a,
                                was_a,
                                now_a ? now_a + ring_size : nullptr,
                                was_a ? was_a + ring_size : nullptr,
                                image);
  }
}

// Advances the head by one slot, after the update has read it.
__global__ void step_head_forward_kernel(int64_t* ring_head, int64_t records) {
  *ring_head = slot_back(*ring_head, -1, records);
}

// ---------------------------------------------------------------------------
// Delayed convolution

// Sizes of one step as the kernels take them (StepArgs and StepShape hold
// host-only members).
struct Geometry {
  int64_t batch, channels, height, width;
  int64_t filters, kernel_h, kernel_w;
  int64_t out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t records;
};

Geometry make_geometry(const StepArgs& args, const StepShape& s) {
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
          s.records};
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

// One weight's reads: the offsets of its older and newer observation in
// each readout ring, counted from pixel (0, 0) of sample 0 with the kernel
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
// maximum (they read that constant instead of the ring).
template <typename scalar_t, int kRings>
__global__ void step_taps_forward_kernel(
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
  const int64_t head = slot_back(*ring_head, 0, g.records);

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
    const int64_t older = slot_back(head, where.older, g.records);
    const int64_t newer = slot_back(head, where.newer, g.records);
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

// An observation as a number; spikes read as 0 or 1 (the delta model's
// coefficients carry Q / dt).
template <typename acc_t, typename source_t>
__device__ __forceinline__ acc_t observed(const source_t* ring, int64_t at) {
  return static_cast<acc_t>(ring[at]);
}

// One thread per output element: thread e of filter f's blocks computes
// out[b, f, y, x] with e = (b * Hout + y) * Wout + x. The filter's taps pass
// through shared memory kThreads at a time; every thread of the block takes
// part in loading them, active or not, so that the barriers are uniform.
template <typename scalar_t, typename source_t, int kRings>
__global__ void step_conv_forward_kernel(
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
  const bool active = e < g.batch * out_plane;
  const int64_t b = e / out_plane;
  const int64_t y0 = (e % out_plane) / g.out_w * g.stride_h - g.pad_h;
  const int64_t x0 = e % g.out_w * g.stride_w - g.pad_w;
  const int64_t pixel = b * g.channels * g.height * g.width + y0 * g.width + x0;
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
                 observed<acc_t>(rings[ring], tap.older + pixel);
        }
        if (tap.value[ring][1] != acc_t(0)) {
          acc += tap.value[ring][1] *
                 observed<acc_t>(rings[ring], tap.newer + pixel);
        }
      }
    }
  }

  if (active) {
    const acc_t shift =
        constant[f] + (bias != nullptr ? static_cast<acc_t>(bias[f]) : 0);
    const int64_t at = (b * g.filters + f) * out_plane + e % out_plane;
    out[at] = static_cast<scalar_t>(acc + shift);
  }
}

// ---------------------------------------------------------------------------
// Host side

// The input as the update kernel reads it: bool spikes and inputs already in
// the weight dtype are read as they are, anything else is converted first.
at::Tensor readable_input(const at::Tensor& input, at::ScalarType dtype) {
  if (input.scalar_type() == at::kBool || input.scalar_type() == dtype) {
    return input.contiguous();
  }
  return input.to(dtype).contiguous();
}

template <typename scalar_t, typename input_t>
void launch_update(const StepArgs& args,
                   const StepShape& s,
                   const at::Tensor& input,
                   const at::Tensor& injected,
                   at::Tensor& spike_ring,
                   at::Tensor& current_ring,
                   const at::Tensor& ring_head,
                   const at::Tensor& image) {
  const int64_t size = s.batch * s.channels * s.height * s.width;
  if (size == 0) {
    return;
  }
  const int64_t blocks = std::min(ceil_div(size, kThreads), kMaxUpdateBlocks);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  step_update_forward_kernel<scalar_t, input_t>
      <<<blocks, kThreads, 0, stream>>>(
          input.const_data_ptr<input_t>(),
          injected.defined() ? injected.const_data_ptr<scalar_t>() : nullptr,
          ring_head.const_data_ptr<int64_t>(),
          spike_ring.data_ptr<bool>(),
          current_ring.numel() > 0 ? current_ring.data_ptr<scalar_t>()
                                   : nullptr,
          image.defined() ? image.data_ptr<scalar_t>() : nullptr,
          update_params<at::opmath_type<scalar_t>>(args),
          size,
          s.records);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_head_advance(at::Tensor& ring_head, int64_t records) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  step_head_forward_kernel<<<1, 1, 0, stream>>>(ring_head.data_ptr<int64_t>(),
                                                records);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Builds the taps and runs the per-weight delay convolution into `out`.
template <typename scalar_t, typename source_t, int kRings>
void launch_delayed_conv(const StepArgs& args,
                         const StepShape& s,
                         const source_t* ring_a,
                         const source_t* ring_b,
                         const at::Tensor& ring_head,
                         const at::Tensor& weight,
                         const at::Tensor& delay,
                         const std::optional<at::Tensor>& bias,
                         at::Tensor& out) {
  using acc_t = at::acc_type<scalar_t, true>;
  using Tap = DeviceTap<acc_t, kRings>;
  const Geometry g = make_geometry(args, s);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto options = weight.options();

  const at::Tensor tap_bytes =
      at::empty({static_cast<int64_t>(weight.numel() * sizeof(Tap))},
                options.dtype(at::kByte));
  const at::Tensor constant = at::empty(
      {s.filters}, options.dtype(c10::CppTypeToScalarType<acc_t>::value));
  Tap* taps = reinterpret_cast<Tap*>(tap_bytes.data_ptr<uint8_t>());
  step_taps_forward_kernel<scalar_t, kRings>
      <<<s.filters, kThreads, 0, stream>>>(
          weight.const_data_ptr<scalar_t>(),
          delay.const_data_ptr<scalar_t>(),
          ring_head.const_data_ptr<int64_t>(),
          make_selection<at::opmath_type<scalar_t>>(args),
          g,
          taps,
          constant.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const int64_t tiles = ceil_div(s.batch * s.out_h * s.out_w, kThreads);
  TORCH_CHECK(tiles * s.filters <= INT_MAX,
              kStepInPlace,
              ": the output (",
              out.sizes(),
              ") needs more than 2^31 - 1 thread blocks; split the batch");
  step_conv_forward_kernel<scalar_t, source_t, kRings>
      <<<tiles * s.filters, kThreads, 0, stream>>>(
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

// Picks the readout rings of the model: spikes for the delta model, one or
// two recorded currents otherwise.
template <typename scalar_t>
void delayed_conv(const StepArgs& args,
                  const StepShape& s,
                  const at::Tensor& spike_ring,
                  const at::Tensor& current_ring,
                  const at::Tensor& ring_head,
                  const at::Tensor& weight,
                  const at::Tensor& delay,
                  const std::optional<at::Tensor>& bias,
                  at::Tensor& out) {
  if (args.kind == kDelta) {
    const bool* spikes = spike_ring.const_data_ptr<bool>();
    launch_delayed_conv<scalar_t, bool, 1>(
        args, s, spikes, spikes, ring_head, weight, delay, bias, out);
    return;
  }
  const scalar_t* currents = current_ring.const_data_ptr<scalar_t>();
  if (args.kind == kDoubleExponential) {
    const int64_t ring_size = current_ring.numel() / current_ring.size(0);
    launch_delayed_conv<scalar_t, scalar_t, 2>(args,
                                               s,
                                               currents,
                                               currents + ring_size,
                                               ring_head,
                                               weight,
                                               delay,
                                               bias,
                                               out);
    return;
  }
  launch_delayed_conv<scalar_t, scalar_t, 1>(
      args, s, currents, currents, ring_head, weight, delay, bias, out);
}

// Runs one step on rings that may be written: updates them, advances the
// head and returns the output.
at::Tensor run_step(const StepArgs& args,
                    const StepShape& s,
                    at::Tensor& spike_ring,
                    at::Tensor& current_ring,
                    at::Tensor& ring_head,
                    const at::Tensor& input,
                    const std::optional<at::Tensor>& injected,
                    const at::Tensor& weight_in,
                    const std::optional<at::Tensor>& bias_in,
                    const std::optional<at::Tensor>& delay_in) {
  const auto dtype = weight_in.scalar_type();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor x = readable_input(input, dtype);
  const at::Tensor inj = injected.has_value() && args.kind == kDeltaPlus
                             ? injected->to(dtype).contiguous()
                             : at::Tensor();
  std::optional<at::Tensor> bias;
  if (bias_in.has_value()) {
    bias = bias_in->contiguous();
  }
  const std::vector<int64_t> out_shape = {s.batch, s.filters, s.out_h, s.out_w};

  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dtype, "delayconv_step_cuda", [&] {
        // Without delays the update also writes the image to convolve.
        const at::Tensor image =
            delay_in.has_value()
                ? at::Tensor()
                : at::empty({s.batch, s.channels, s.height, s.width},
                            weight.options());
        if (x.scalar_type() == at::kBool) {
          launch_update<scalar_t, bool>(
              args, s, x, inj, spike_ring, current_ring, ring_head, image);
        } else {
          launch_update<scalar_t, scalar_t>(
              args, s, x, inj, spike_ring, current_ring, ring_head, image);
        }
        launch_head_advance(ring_head, s.records);

        if (s.batch == 0 || s.filters == 0) {
          out = at::empty(out_shape, weight.options());
        } else if (!delay_in.has_value()) {
          out = at::conv2d(
              image, weight, bias, args.stride, args.padding, args.dilation);
        } else {
          out = at::empty(out_shape, weight.options());
          delayed_conv<scalar_t>(args,
                                 s,
                                 spike_ring,
                                 current_ring,
                                 ring_head,
                                 weight,
                                 delay_in->contiguous(),
                                 bias,
                                 out);
        }
      });
  return out;
}

void check_cuda_tensors(const at::Tensor& spike_ring,
                        const at::Tensor& current_ring,
                        const at::Tensor& weight) {
  TORCH_CHECK(weight.is_cuda(),
              kStepInPlace,
              ": the CUDA kernel needs every tensor on one GPU, got the ",
              "weight on ",
              weight.device());
  TORCH_CHECK(spike_ring.is_contiguous() && current_ring.is_contiguous(),
              kStepInPlace,
              ": the rings are written in place and must be contiguous");
}

at::Tensor step_inplace_cuda(at::Tensor& spike_ring,
                             at::Tensor& current_ring,
                             at::Tensor& ring_head,
                             const at::Tensor& input,
                             const std::optional<at::Tensor>& injected,
                             const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& delay,
                             c10::IntArrayRef stride,
                             c10::IntArrayRef padding,
                             c10::IntArrayRef dilation,
                             int64_t kind,
                             double spike_charge,
                             double tau_a,
                             double tau_b,
                             double step_time,
                             double max_delay,
                             int64_t interp,
                             double tolerance,
                             std::optional<double> current_overbound) {
  const StepArgs args = make_step_args(kStepInPlace,
                                       stride,
                                       padding,
                                       dilation,
                                       kind,
                                       spike_charge,
                                       tau_a,
                                       tau_b,
                                       step_time,
                                       max_delay,
                                       interp,
                                       tolerance,
                                       current_overbound);
  const StepShape s = check_step_tensors(kStepInPlace,
                                         args,
                                         spike_ring,
                                         current_ring,
                                         ring_head,
                                         input,
                                         injected,
                                         weight,
                                         bias,
                                         delay);
  check_cuda_tensors(spike_ring, current_ring, weight);

  const c10::cuda::CUDAGuard guard(weight.device());
  return run_step(args,
                  s,
                  spike_ring,
                  current_ring,
                  ring_head,
                  input,
                  injected,
                  weight,
                  bias,
                  delay);
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(delayconv, CUDA, m) {
  m.impl("step_", &cuda::step_inplace_cuda);
}

}  // namespace delayconv

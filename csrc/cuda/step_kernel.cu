// CUDA kernels of the in-place step operator.
//
// One step is four launches on the current stream, in this order:
// 1. step_update_forward_kernel: the synapse update (synapse_rule.h), one
//    thread per input element, writes the newest observation at slot
//    (head + 1) % R. Every thread reads the old head.
// 2. step_head_forward_kernel: one thread advances the head. Stream order
//    puts it after every block of the update, so no block can read a head
//    that was already advanced.
// 3-4. the taps and the per-weight delay convolution of delayed_conv.cuh,
//    reading the ring at the new head.
// The head lives on the GPU and is only ever read there: reading it on the
// host would synchronize the stream and break CUDA graph capture.
//
// Without delays the update also writes the newest current as an image and
// ATen's convolution (cuDNN, in IEEE float32) convolves it; launches 3 and 4
// do not run. The CPU kernel also hands one shared delay to a dense
// convolution, but finding out that all delays are equal would copy a flag to
// the host every step, a synchronization; here the per-weight kernel handles
// that case as well.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/common.cuh"
#include "cuda/delayed_conv.cuh"
#include "selection.h"
#include "step_args.h"
#include "synapse_rule.h"

namespace delayconv {
namespace cuda {
namespace {

constexpr const char* kStepInPlace = "delayconv.step_";

// ---------------------------------------------------------------------------
// Synapse update

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
    SynapseRule<at::opmath_type<scalar_t>> u,
    int64_t size,
    int64_t records) {
  using O = at::opmath_type<scalar_t>;
  // A head outside [0, R) cannot be reported from here without a
  // synchronization; it is taken modulo R instead.
  const int64_t previous = slot_back(*ring_head, 0, records);
  const int64_t next = slot_back(previous, -1, records);
  // The delta model records no current: its ring is empty and never read.
  scalar_t* ring_b = current_ring ? current_ring + records * size : nullptr;

  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < size;
       e += step) {
    const O x = static_cast<O>(input[e]);
    spike_ring[next * size + e] = x != O(0);
    SynapseState<O> state = load_state<scalar_t, O>(
        u.kind, current_ring, ring_b, previous * size + e);
    const O newest = update_element<scalar_t>(
        u,
        x,
        injected != nullptr,
        injected != nullptr ? static_cast<O>(injected[e]) : O(0),
        state);
    store_state<scalar_t>(u.kind, state, current_ring, ring_b, next * size + e);
    if (image != nullptr) {
      image[e] = static_cast<scalar_t>(newest);
    }
  }
}

// Advances the head by one slot, after the update has read it.
__global__ void step_head_forward_kernel(int64_t* ring_head, int64_t records) {
  *ring_head = slot_back(*ring_head, -1, records);
}

// ---------------------------------------------------------------------------
// Host side

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
  const auto stream = c10::cuda::getCurrentCUDAStream();
  step_update_forward_kernel<scalar_t, input_t>
      <<<stride_blocks(size), kThreads, 0, stream>>>(
          input.const_data_ptr<input_t>(),
          injected.defined() ? injected.const_data_ptr<scalar_t>() : nullptr,
          ring_head.const_data_ptr<int64_t>(),
          spike_ring.data_ptr<bool>(),
          current_ring.numel() > 0 ? current_ring.data_ptr<scalar_t>()
                                   : nullptr,
          image.defined() ? image.data_ptr<scalar_t>() : nullptr,
          args.rule<at::opmath_type<scalar_t>>(),
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
          out = ieee_conv2d(
              image, weight, bias, args.stride, args.padding, args.dilation);
        } else {
          out = at::empty(out_shape, weight.options());
          delayed_conv<scalar_t>(kStepInPlace,
                                 args,
                                 make_geometry(args, s, 1),
                                 spike_ring,
                                 current_ring,
                                 ring_head.const_data_ptr<int64_t>(),
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
  check_cuda_weight(kStepInPlace, weight);
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
                             DELAYCONV_CONFIG_PARAMS) {
  const StepArgs args = make_step_args(kStepInPlace, DELAYCONV_CONFIG_ARGS);
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

// CUDA kernels of the sequence operator: T steps at once, without mutation.
//
// As on the CPU, the ring before the sequence and the T new observations are
// laid out as one history, oldest first, so that the observation k steps
// back of step t is history[R + t - k]. Three phases on the current stream:
// 1. the ring, reordered oldest first into the history by index_select with
//    slots computed on the GPU from the head (history[j] is slot
//    (head + 1 + j) mod R), so that the head never reaches the host;
// 2. sequence_update_forward_kernel: one thread per element of an
//    observation runs it through all T steps in time order, its recorded
//    currents kept in registers between steps;
// 3. the convolution of all T steps: with per-weight delays, the taps and
//    delayed-convolution kernels of delayed_conv.cuh over T x B images;
//    without delays, ATen's convolution (cuDNN) of the T x B newest-current
//    images in one call.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/remainder.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "cuda/common.cuh"
#include "cuda/delayed_conv.cuh"
#include "selection.h"
#include "step_args.h"
#include "synapse_rule.h"

namespace delayconv {
namespace cuda {
namespace {

constexpr const char* kSequence = "delayconv.sequence";

// Runs element e of the observations through steps 0 .. T-1: reads the
// newest observation of the ring (history index R - 1) once, then writes
// history index R + t for every step t. `image`, where given, receives the
// newest synaptic current of every step (T x B x C x H x W) for a dense
// convolution. `input_t` is bool or scalar_t.
template <typename scalar_t, typename input_t>
__global__ void sequence_update_forward_kernel(
    const input_t* __restrict__ inputs,
    const scalar_t* __restrict__ injected,
    bool* __restrict__ spike_history,
    scalar_t* __restrict__ current_history,
    scalar_t* __restrict__ image,
    SynapseRule<at::opmath_type<scalar_t>> u,
    int64_t size,
    int64_t steps,
    int64_t records) {
  using O = at::opmath_type<scalar_t>;
  // The delta model records no current: its history is empty, never read.
  scalar_t* history_b = current_history != nullptr
                            ? current_history + (records + steps) * size
                            : nullptr;

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < size;
       e += stride) {
    SynapseState<O> state = load_state<scalar_t, O>(
        u.kind, current_history, history_b, (records - 1) * size + e);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t at = t * size + e;
      const int64_t slot = (records + t) * size + e;
      const O x = static_cast<O>(inputs[at]);
      spike_history[slot] = x != O(0);
      const O newest = update_element<scalar_t>(
          u,
          x,
          injected != nullptr,
          injected != nullptr ? static_cast<O>(injected[at]) : O(0),
          state);
      store_state<scalar_t>(u.kind, state, current_history, history_b, slot);
      if (image != nullptr) {
        image[at] = static_cast<scalar_t>(newest);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Host side

// The slots of the ring's observations in age order, oldest first:
// (head + 1 + j) mod R for j in [0, R), computed on the GPU. A head outside
// [0, R) cannot be reported without a synchronization; it is taken modulo R.
at::Tensor oldest_first_slots(const at::Tensor& ring_head, int64_t records) {
  const at::Tensor next = ring_head + 1;
  return at::remainder(at::arange(records, ring_head.options()) + next,
                       records);
}

// The operands in the layout and dtype the kernels read.
struct Operands {
  at::Tensor inputs;    // bool, or the weight dtype
  at::Tensor injected;  // undefined unless the model takes injected current
  at::Tensor weight;
  std::optional<at::Tensor> bias;
  std::optional<at::Tensor> delay;
};

Operands prepare_operands(const StepArgs& args,
                          const at::Tensor& inputs,
                          const std::optional<at::Tensor>& injected,
                          const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& delay) {
  const auto dtype = weight.scalar_type();
  Operands o;
  o.inputs = readable_input(inputs, dtype);
  if (injected.has_value() && args.kind == kDeltaPlus) {
    o.injected = injected->to(dtype).contiguous();
  }
  o.weight = weight.contiguous();
  if (bias.has_value()) {
    o.bias = bias->contiguous();
  }
  if (delay.has_value()) {
    o.delay = delay->contiguous();
  }
  return o;
}

// The history the sequence returns and, where the convolution needs it, the
// newest synaptic current of every step as T x B x C x H x W images: without
// delays, the models that do not record their current (delta, double
// exponential) have the update write it.
struct History {
  at::Tensor spikes;    // (R + T) x B x C x H x W
  at::Tensor currents;  // K x (R + T) x B x C x H x W
  at::Tensor derived;   // T x B x C x H x W, or undefined
};

// Allocates the history and copies the ring into its first R observations.
History start_history(const StepArgs& args,
                      const StepShape& s,
                      int64_t steps,
                      const Operands& o,
                      const at::Tensor& spike_ring,
                      const at::Tensor& current_ring,
                      const at::Tensor& ring_head) {
  const int64_t length = s.records + steps;
  History h;
  h.spikes = at::empty({length, s.batch, s.channels, s.height, s.width},
                       spike_ring.options());
  h.currents =
      at::empty({s.recorded, length, s.batch, s.channels, s.height, s.width},
                current_ring.options());
  const bool derives = args.kind == kDelta || args.kind == kDoubleExponential;
  if (!o.delay.has_value() && derives) {
    h.derived = at::empty({steps, s.batch, s.channels, s.height, s.width},
                          o.weight.options());
  }
  if (spike_ring.numel() == 0) {
    return h;
  }

  const at::Tensor slots = oldest_first_slots(ring_head, s.records);
  h.spikes.narrow(0, 0, s.records).copy_(spike_ring.index_select(0, slots));
  if (s.recorded > 0) {
    h.currents.narrow(1, 0, s.records)
        .copy_(current_ring.index_select(1, slots));
  }
  return h;
}

template <typename scalar_t, typename input_t>
void launch_updates(const StepArgs& args,
                    const StepShape& s,
                    int64_t steps,
                    const Operands& o,
                    History& h) {
  const int64_t size = s.batch * s.channels * s.height * s.width;
  if (size == 0 || steps == 0) {
    return;
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  sequence_update_forward_kernel<scalar_t, input_t>
      <<<stride_blocks(size), kThreads, 0, stream>>>(
          o.inputs.const_data_ptr<input_t>(),
          o.injected.defined() ? o.injected.const_data_ptr<scalar_t>()
                               : nullptr,
          h.spikes.data_ptr<bool>(),
          s.recorded > 0 ? h.currents.data_ptr<scalar_t>() : nullptr,
          h.derived.defined() ? h.derived.data_ptr<scalar_t>() : nullptr,
          args.rule<at::opmath_type<scalar_t>>(),
          size,
          steps,
          s.records);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The outputs of all T steps from the completed history. Without delays
// the convolution reads the newest current of every step: the derived one,
// or the recorded one in the history.
template <typename scalar_t>
at::Tensor convolve_steps(const StepArgs& args,
                          const StepShape& s,
                          int64_t steps,
                          const Operands& o,
                          const History& h) {
  const std::vector<int64_t> shape = {
      steps, s.batch, s.filters, s.out_h, s.out_w};
  if (steps == 0 || s.batch == 0 || s.filters == 0) {
    return at::empty(shape, o.weight.options());
  }
  if (!o.delay.has_value()) {
    const at::Tensor images = h.derived.defined()
                                  ? h.derived
                                  : h.currents[0].narrow(0, s.records, steps);
    const at::Tensor batched =
        images.view({steps * s.batch, s.channels, s.height, s.width});
    return ieee_conv2d(batched,
                       o.weight,
                       o.bias,
                       args.stride,
                       args.padding,
                       args.dilation)
        .view(shape);
  }

  at::Tensor out = at::empty(shape, o.weight.options());
  delayed_conv<scalar_t>(kSequence,
                         args,
                         make_geometry(args, s, steps),
                         h.spikes,
                         h.currents,
                         nullptr,
                         o.weight,
                         *o.delay,
                         o.bias,
                         out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_sequence(
    const StepArgs& args,
    const StepShape& s,
    int64_t steps,
    const Operands& o,
    const at::Tensor& spike_ring,
    const at::Tensor& current_ring,
    const at::Tensor& ring_head) {
  History h =
      start_history(args, s, steps, o, spike_ring, current_ring, ring_head);

  at::Tensor outputs;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf,
      at::kBFloat16,
      o.weight.scalar_type(),
      "delayconv_sequence_cuda",
      [&] {
        if (o.inputs.scalar_type() == at::kBool) {
          launch_updates<scalar_t, bool>(args, s, steps, o, h);
        } else {
          launch_updates<scalar_t, scalar_t>(args, s, steps, o, h);
        }
        outputs = convolve_steps<scalar_t>(args, s, steps, o, h);
      });
  return {outputs, h.spikes, h.currents};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sequence_cuda(
    const at::Tensor& spike_ring,
    const at::Tensor& current_ring,
    const at::Tensor& ring_head,
    const at::Tensor& inputs,
    const std::optional<at::Tensor>& injected,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& delay,
    DELAYCONV_CONFIG_PARAMS) {
  const StepArgs args = make_step_args(kSequence, DELAYCONV_CONFIG_ARGS);
  const StepShape s = check_step_tensors(kSequence,
                                         args,
                                         spike_ring,
                                         current_ring,
                                         ring_head,
                                         std::nullopt,
                                         std::nullopt,
                                         weight,
                                         bias,
                                         delay);
  const int64_t steps =
      check_sequence_inputs(kSequence, s, inputs, injected, weight);
  check_cuda_weight(kSequence, weight);

  const c10::cuda::CUDAGuard guard(weight.device());
  const Operands o =
      prepare_operands(args, inputs, injected, weight, bias, delay);
  return run_sequence(args, s, steps, o, spike_ring, current_ring, ring_head);
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(delayconv, CUDA, m) {
  m.impl("sequence", &cuda::sequence_cuda);
}

}  // namespace delayconv

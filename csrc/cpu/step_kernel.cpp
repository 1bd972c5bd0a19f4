// CPU kernel of the in-place step: the synapse update writes the newest
// observation into the ring, then the output is convolved from the
// observations the weights' delays select.
//
// Which convolution runs depends on the delays:
// - no delays, or one delay shared by every weight: the selected currents
//   form one image, and ATen's convolution (oneDNN) convolves it fastest;
// - per-weight delays: every weight reads its own ring slot, so the direct
//   convolution of direct_conv.h accumulates each output plane from the taps
//   of its filter; for a delta synapse over sparse spikes, the event-driven
//   one of event_conv.h adds each spike's taps instead.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/direct_conv.h"
#include "cpu/event_conv.h"
#include "cpu/operands.h"
#include "cpu/selected_image.h"
#include "cpu/synapse_update.h"
#include "cpu/taps.h"
#include "step_args.h"

namespace delayconv {
namespace cpu {
namespace {

constexpr const char* kOp = "delayconv.step_";

// Writes the newest observation at slot `head` from the one at `previous`;
// `current`, if defined, receives the newest synaptic current (see
// update_observation).
template <typename T>
void update_ring(const StepArgs& args,
                 at::Tensor& spike_ring,
                 at::Tensor& current_ring,
                 const Operands& o,
                 int64_t previous,
                 int64_t head,
                 at::Tensor& current) {
  const int64_t size = o.input.numel();
  const int64_t ring_size = spike_ring.numel();
  bool* spikes = spike_ring.data_ptr<bool>();
  T* currents = current_ring.data_ptr<T>();
  T* second = currents + (current_ring.size(0) > 1 ? ring_size : 0);
  const Observation<T> was{spikes + previous * size,
                           currents + previous * size,
                           second + previous * size};
  const Observation<T> now{
      spikes + head * size, currents + head * size, second + head * size};
  const T* injected =
      o.injected.defined() ? o.injected.const_data_ptr<T>() : nullptr;
  T* out = current.defined() ? current.data_ptr<T>() : nullptr;
  if (o.input.scalar_type() == at::kBool) {
    update_observation<T, bool>(args.rule<T>(),
                                size,
                                o.input.const_data_ptr<bool>(),
                                injected,
                                was,
                                now,
                                out);
  } else {
    update_observation<T, T>(args.rule<T>(),
                             size,
                             o.input.const_data_ptr<T>(),
                             injected,
                             was,
                             now,
                             out);
  }
}

template <typename T>
at::Tensor per_weight_delays(const StepArgs& args,
                             const StepShape& s,
                             const at::Tensor& spike_ring,
                             const at::Tensor& current_ring,
                             int64_t head,
                             const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const at::Tensor& delay) {
  const TapTable<T> table = build_taps<T>(
      args, s, weight.const_data_ptr<T>(), delay.const_data_ptr<T>());
  at::Tensor out =
      at::empty({s.batch, s.filters, s.out_h, s.out_w}, weight.options());
  const T* bias_data = bias.has_value() ? bias->const_data_ptr<T>() : nullptr;
  const Observations where{head, s.records, spike_ring.numel() / s.records};
  const Planes planes(args, s);
  SpikeEvents events;
  if (args.kind == kDelta && prefer_events(spike_ring.const_data_ptr<bool>(),
                                           s.records,
                                           head,
                                           s,
                                           planes,
                                           events)) {
    forward_events<T>(
        s, planes, table, events, where, 1, bias_data, out.data_ptr<T>());
    return out;
  }
  const Staged<T> staged =
      args.kind == kDelta
          ? stage<T, bool>(spike_ring.const_data_ptr<bool>(),
                           nullptr,
                           s.records,
                           where,
                           s,
                           planes,
                           weight.options())
          : stage<T, T>(current_ring.const_data_ptr<T>(),
                        s.recorded > 1 ? current_ring.const_data_ptr<T>() +
                                             current_ring.numel() / 2
                                       : nullptr,
                        s.records,
                        where,
                        s,
                        planes,
                        weight.options());
  forward_planes<T>(s, planes, table, staged, 1, bias_data, out.data_ptr<T>());
  return out;
}

at::Tensor step_inplace_cpu(at::Tensor& spike_ring,
                            at::Tensor& current_ring,
                            at::Tensor& ring_head,
                            const at::Tensor& input,
                            const std::optional<at::Tensor>& injected,
                            const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& delay,
                            DELAYCONV_CONFIG_PARAMS) {
  const StepArgs args = make_step_args(kOp, DELAYCONV_CONFIG_ARGS);
  const StepShape s = check_step_tensors(kOp,
                                         args,
                                         spike_ring,
                                         current_ring,
                                         ring_head,
                                         input,
                                         injected,
                                         weight,
                                         bias,
                                         delay);
  check_cpu_dtype(kOp, weight);
  TORCH_CHECK(spike_ring.is_contiguous() && current_ring.is_contiguous(),
              kOp,
              ": the rings are written in place and must be contiguous");
  const int64_t previous = ring_head.item<int64_t>();
  TORCH_CHECK(previous >= 0 && previous < s.records,
              kOp,
              ": 'ring_head' must index the ring, in [0, ",
              s.records,
              "), got ",
              previous);

  const Operands o =
      prepare_operands(args, input, injected, weight, bias, delay);
  const int64_t head = (previous + 1) % s.records;
  at::Tensor out;
  // Without delays the newest current is all the convolution reads; the
  // models that do not record it get it from the update, in the same pass.
  const bool derived = args.kind == kDelta || args.kind == kDoubleExponential;
  at::Tensor current = !o.delay.has_value() && derived
                           ? at::empty(input.sizes(), weight.options())
                           : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "delayconv_step_cpu", [&] {
    update_ring<scalar_t>(
        args, spike_ring, current_ring, o, previous, head, current);
    ring_head.fill_(head);

    if (current.defined()) {
      out = at::conv2d(
          current, o.weight, o.bias, args.stride, args.padding, args.dilation);
      return;
    }

    if (o.delay.has_value() && !o.shared_delay) {
      out = per_weight_delays<scalar_t>(
          args, s, spike_ring, current_ring, head, o.weight, o.bias, *o.delay);
      return;
    }
    const RingView ring{spike_ring, current_ring, head, s.records};
    out = convolve_selected<scalar_t>(args, s, ring, o, 1);
  });
  return out;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(delayconv, CPU, m) {
  m.impl("step_", &cpu::step_inplace_cpu);
}

}  // namespace delayconv

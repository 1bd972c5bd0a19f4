// CPU kernel of the sequence operator: T steps at once, without mutation.
//
// The ring before the sequence and the T new observations are laid out as
// one history, oldest first, so that the observation k steps back of step t
// is history[R + t - k]: the synapse update runs over the history in time
// order, then every step's convolution runs in one parallel pass (or, with a
// shared delay, as one batched ATen convolution of T x B images). The history
// is returned: it is all the backward pass needs.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/remainder.h>
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

constexpr const char* kOp = "delayconv.sequence";

// The ring's observations in age order (oldest first): history[j] is the
// observation R - 1 - j steps back.
at::Tensor oldest_first(const at::Tensor& ring, int64_t head, int dim) {
  const int64_t records = ring.size(dim);
  at::Tensor back =
      at::arange(records - 1, -1, -1, ring.options().dtype(at::kLong));
  at::Tensor slots = at::remainder(back.neg() + head, records);
  return ring.index_select(dim, slots);
}

template <typename T>
void run_updates(const StepArgs& args,
                 const StepShape& s,
                 const Operands& o,
                 at::Tensor& spike_history,
                 at::Tensor& current_history,
                 int64_t steps) {
  const int64_t size = s.batch * s.channels * s.height * s.width;
  const int64_t length = s.records + steps;
  bool* spikes = spike_history.data_ptr<bool>();
  T* currents = current_history.data_ptr<T>();
  T* second = currents + (s.recorded > 1 ? length * size : 0);
  const T* injected =
      o.injected.defined() ? o.injected.const_data_ptr<T>() : nullptr;
  const SynapseRule<T> u = args.rule<T>();

  for (int64_t t = 0; t < steps; ++t) {
    const int64_t was = (s.records + t - 1) * size;
    const int64_t now = was + size;
    const Observation<T> before{spikes + was, currents + was, second + was};
    const Observation<T> after{spikes + now, currents + now, second + now};
    const T* extra = injected != nullptr ? injected + t * size : nullptr;
    if (o.input.scalar_type() == at::kBool) {
      const bool* input = o.input.const_data_ptr<bool>() + t * size;
      update_observation<T, bool>(u, size, input, extra, before, after);
    } else {
      const T* input = o.input.const_data_ptr<T>() + t * size;
      update_observation<T, T>(u, size, input, extra, before, after);
    }
  }
}

template <typename T>
at::Tensor convolve_steps(const StepArgs& args,
                          const StepShape& s,
                          const Operands& o,
                          const at::Tensor& spike_history,
                          const at::Tensor& current_history,
                          int64_t steps) {
  const int64_t size = s.batch * s.channels * s.height * s.width;
  const Observations where{s.records, 0, size};
  if (!o.delay.has_value() || o.shared_delay) {
    const RingView view{spike_history, current_history, where};
    return convolve_selected<T>(args, s, view, o, steps)
        .view({steps, s.batch, s.filters, s.out_h, s.out_w});
  }

  const TapTable<T> table = build_taps<T>(
      args, s, o.weight.const_data_ptr<T>(), o.delay->const_data_ptr<T>());
  at::Tensor out = at::empty({steps, s.batch, s.filters, s.out_h, s.out_w},
                             o.weight.options());
  const T* bias = o.bias.has_value() ? o.bias->const_data_ptr<T>() : nullptr;
  const Planes planes(args, s);
  SpikeEvents events;
  if (args.kind == kDelta && prefer_events(spike_history.const_data_ptr<bool>(),
                                           s.records + steps,
                                           s.records + steps - 1,
                                           s,
                                           planes,
                                           events)) {
    forward_events<T>(
        s, planes, table, events, where, steps, bias, out.data_ptr<T>());
    return out;
  }
  const Staged<T> staged =
      stage_history<T>(args, s, steps, spike_history, current_history);
  forward_planes<T>(s, planes, table, staged, steps, bias, out.data_ptr<T>());
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sequence_cpu(
    const at::Tensor& spike_ring,
    const at::Tensor& current_ring,
    const at::Tensor& ring_head,
    const at::Tensor& inputs,
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
                                         std::nullopt,
                                         std::nullopt,
                                         weight,
                                         bias,
                                         delay);
  const int64_t steps = check_sequence_inputs(kOp, s, inputs, injected, weight);
  check_cpu_dtype(kOp, weight);
  const int64_t head = ring_head.item<int64_t>();
  TORCH_CHECK(head >= 0 && head < s.records,
              kOp,
              ": 'ring_head' must index the ring, in [0, ",
              s.records,
              "), got ",
              head);

  // The history starts with the ring, oldest first; the updates append.
  const Operands o =
      prepare_operands(args, inputs, injected, weight, bias, delay);
  const int64_t length = s.records + steps;
  at::Tensor spike_history = at::empty(
      {length, s.batch, s.channels, s.height, s.width}, spike_ring.options());
  at::Tensor current_history =
      at::empty({s.recorded, length, s.batch, s.channels, s.height, s.width},
                current_ring.options());
  spike_history.narrow(0, 0, s.records)
      .copy_(oldest_first(spike_ring, head, 0));
  current_history.narrow(1, 0, s.records)
      .copy_(oldest_first(current_ring, head, 1));

  at::Tensor outputs;
  AT_DISPATCH_FLOATING_TYPES(
      weight.scalar_type(), "delayconv_sequence_cpu", [&] {
        run_updates<scalar_t>(
            args, s, o, spike_history, current_history, steps);
        outputs = steps == 0
                      ? at::empty({0, s.batch, s.filters, s.out_h, s.out_w},
                                  weight.options())
                      : convolve_steps<scalar_t>(
                            args, s, o, spike_history, current_history, steps);
      });
  return {outputs, spike_history, current_history};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(delayconv, CPU, m) {
  m.impl("sequence", &cpu::sequence_cpu);
}

}  // namespace delayconv

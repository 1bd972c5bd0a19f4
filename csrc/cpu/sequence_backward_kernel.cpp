// CPU kernel of the sequence's backward pass, from the history it returned.
//
// Three parts, each run only when its gradient is wanted:
// - the gradient of every observation the sequence made: the transposed
//   delayed convolution of the output gradient;
// - the inputs' gradient: that, carried back through the synapse dynamics
//   (a linear recurrence for the exponential models);
// - the weights' and delays' gradients: correlations of the output gradient
//   with the observations each weight read, and with the neighbours that
//   define the slope of its delayed read.

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "cpu/correlate.h"
#include "cpu/direct_conv.h"
#include "cpu/operands.h"
#include "cpu/synapse_update.h"
#include "cpu/taps.h"
#include "cpu/transposed_conv.h"
#include "step_args.h"

namespace delayconv {
namespace cpu {
namespace {

constexpr const char* kOp = "delayconv.sequence_backward";

enum Wanted { kInputs = 0, kInjected, kWeight, kBias, kDelay };

// readouts x T x B x C x H x W: the gradient of each observation the sequence
// made, per readout ring.
template <typename T>
at::Tensor observation_grads(const StepArgs& args,
                             const StepShape& s,
                             const Operands& o,
                             int64_t steps,
                             const at::Tensor& grad_outputs) {
  const TapTable<T> table = build_taps<T>(
      args,
      s,
      o.weight.const_data_ptr<T>(),
      o.delay.has_value() ? o.delay->const_data_ptr<T>() : nullptr);
  std::vector<std::vector<Tap<T>>> per_channel(s.channels);
  for (const auto& taps : table.per_filter) {
    for (const Tap<T>& tap : taps) {
      per_channel[tap.c].push_back(tap);
    }
  }

  const int readouts = readout_rings(args.kind);
  at::Tensor grad =
      at::empty({readouts, steps, s.batch, s.channels, s.height, s.width},
                o.weight.options());
  transposed_planes<T>(s,
                       Planes(args, s),
                       per_channel,
                       readouts,
                       steps,
                       grad_outputs.const_data_ptr<T>(),
                       grad.data_ptr<T>());
  return grad;
}

// Carries the observations' gradient back through the synapse dynamics to
// the inputs (and the injected current), last step first.
template <typename T>
void input_grads(const StepArgs& args,
                 int64_t steps,
                 const at::Tensor& observed,
                 at::Tensor& grad_inputs,
                 at::Tensor& grad_injected) {
  const SynapseRule<T> u = args.rule<T>();
  const int64_t size =
      steps == 0 ? 0 : observed.numel() / observed.size(0) / steps;
  const T* g_a = observed.const_data_ptr<T>();
  const T* g_b = g_a + (observed.size(0) > 1 ? steps * size : 0);
  T* gx = grad_inputs.defined() ? grad_inputs.data_ptr<T>() : nullptr;
  T* gi = grad_injected.defined() ? grad_injected.data_ptr<T>() : nullptr;

  at::parallel_for(0, size, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      SynapseState<T> carried{T(0), T(0)};
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t at = t * size + e;
        const T gradient = input_gradient(u, g_a[at], g_b[at], carried);
        if (gx != nullptr) gx[at] = gradient;
        if (gi != nullptr) gi[at] = g_a[at];
      }
    }
  });
}

// The correlations behind one weight's gradients, with the coefficient each
// contributes to the weight's and to the delay's gradient.
template <typename T>
struct WeightTerms {
  std::vector<Correlation> wanted;
  std::vector<int64_t> first_of_filter;
  std::vector<T> weight_coef;     // per correlation
  std::vector<T> delay_coef;      // per correlation
  std::vector<int64_t> owner;     // weight index per correlation
  std::vector<T> overbound_coef;  // per weight: d(out)/d(weight) constant
};

template <typename T>
void add_term(WeightTerms<T>& terms,
              int64_t first,
              const Correlation& c,
              int64_t owner,
              T weight_coef,
              T delay_coef) {
  for (size_t k = first; k < terms.wanted.size(); ++k) {
    const Correlation& seen = terms.wanted[k];
    if (terms.owner[k] == owner && seen.ring == c.ring &&
        seen.steps == c.steps) {
      terms.weight_coef[k] += weight_coef;
      terms.delay_coef[k] += delay_coef;
      return;
    }
  }
  terms.wanted.push_back(c);
  terms.owner.push_back(owner);
  terms.weight_coef.push_back(weight_coef);
  terms.delay_coef.push_back(delay_coef);
}

template <typename T>
WeightTerms<T> weight_terms(const StepArgs& args,
                            const StepShape& s,
                            const Operands& o,
                            bool with_delay) {
  const ReadoutParams<T> readout = args.readout<T>();
  const T step_time = static_cast<T>(args.step_time);
  const T max_delay = static_cast<T>(args.max_delay);
  const T tolerance = static_cast<T>(args.tolerance);
  const T* delay = o.delay.has_value() ? o.delay->const_data_ptr<T>() : nullptr;
  const int rings = readout_rings(args.kind);
  const int64_t per_filter = s.channels * s.kernel_h * s.kernel_w;

  WeightTerms<T> terms;
  terms.overbound_coef.assign(s.filters * per_filter, T(0));
  terms.first_of_filter.push_back(0);
  for (int64_t f = 0; f < s.filters; ++f) {
    for (int64_t n = 0; n < per_filter; ++n) {
      const int64_t w = f * per_filter + n;
      const KernelIndex k = kernel_index(s, n);
      const int64_t first = terms.wanted.size();
      const Location<T> where =
          delay == nullptr
              ? Location<T>{0, 0, T(0), true}
              : locate(delay[w], step_time, max_delay, tolerance, s.records);
      const bool outside = !where.inbound && args.current_overbound.has_value();
      if (outside) {
        terms.overbound_coef[w] = static_cast<T>(*args.current_overbound);
      }
      for (int ring = 0; ring < rings && !outside; ++ring) {
        const TapPair<T> pair = tap_pair(readout, where, ring);
        const Correlation older{f, k.c, k.i, k.j, ring, where.older};
        add_term<T>(terms, first, older, w, pair.older, T(0));
        if (pair.newer != T(0) && where.newer != where.older) {
          const Correlation newer{f, k.c, k.i, k.j, ring, where.newer};
          add_term<T>(terms, first, newer, w, pair.newer, T(0));
        }
      }
      for (int ring = 0; ring < rings && with_delay && delay != nullptr;
           ++ring) {
        const Slope<T> slope =
            read_slope(readout, delay[w], max_delay, s.records, ring);
        if (slope.d_older == T(0) && slope.d_newer == T(0)) {
          continue;
        }
        const Correlation older{f, k.c, k.i, k.j, ring, slope.older};
        const Correlation newer{f, k.c, k.i, k.j, ring, slope.newer};
        add_term<T>(terms, first, older, w, T(0), slope.d_older);
        add_term<T>(terms, first, newer, w, T(0), slope.d_newer);
      }
    }
    terms.first_of_filter.push_back(terms.wanted.size());
  }
  return terms;
}

template <typename T>
void weight_and_delay_grads(const StepArgs& args,
                            const StepShape& s,
                            const Operands& o,
                            const Staged<T>& staged,
                            int64_t steps,
                            const at::Tensor& grad_outputs,
                            at::Tensor& grad_weight,
                            at::Tensor& grad_delay) {
  using Acc = at::acc_type<T, false>;
  const WeightTerms<T> terms =
      weight_terms<T>(args, s, o, grad_delay.defined());
  const std::vector<Acc> sums =
      correlations<T, Acc>(s,
                           Planes(args, s),
                           terms.wanted,
                           terms.first_of_filter,
                           staged,
                           steps,
                           grad_outputs.const_data_ptr<T>());

  // d(out)/d(weight) of a weight reading the overbound value is that value
  // at every position of its filter.
  const at::Tensor per_filter = grad_outputs.sum({0, 1, 3, 4});
  const T* filter_sums = per_filter.const_data_ptr<T>();
  const int64_t weights = o.weight.numel();
  const int64_t weights_per_filter = weights / std::max<int64_t>(s.filters, 1);
  std::vector<Acc> gw(weights, Acc(0));
  std::vector<Acc> gd(weights, Acc(0));
  for (int64_t w = 0; w < weights; ++w) {
    gw[w] = terms.overbound_coef[w] * filter_sums[w / weights_per_filter];
  }
  for (size_t k = 0; k < sums.size(); ++k) {
    gw[terms.owner[k]] += terms.weight_coef[k] * sums[k];
    gd[terms.owner[k]] += terms.delay_coef[k] * sums[k];
  }

  const T* weight = o.weight.const_data_ptr<T>();
  if (grad_weight.defined()) {
    T* out = grad_weight.data_ptr<T>();
    for (int64_t w = 0; w < weights; ++w) {
      out[w] = static_cast<T>(gw[w]);
    }
  }
  if (grad_delay.defined()) {
    T* out = grad_delay.data_ptr<T>();
    for (int64_t w = 0; w < weights; ++w) {
      out[w] = static_cast<T>(weight[w] * gd[w]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
sequence_backward_cpu(const at::Tensor& grad_outputs_in,
                      const at::Tensor& spike_history,
                      const at::Tensor& current_history,
                      const at::Tensor& weight,
                      const std::optional<at::Tensor>& delay,
                      DELAYCONV_CONFIG_PARAMS,
                      std::array<bool, 5> mask) {
  const StepArgs args = make_step_args(kOp, DELAYCONV_CONFIG_ARGS);
  int64_t steps = 0;
  const StepShape s = check_history(kOp,
                                    args,
                                    grad_outputs_in,
                                    spike_history,
                                    current_history,
                                    weight,
                                    delay,
                                    steps);
  check_cpu_dtype(kOp, weight);
  TORCH_CHECK(
      spike_history.is_contiguous() && current_history.is_contiguous(),
      kOp,
      ": the histories must be contiguous, as the sequence returned them");

  const at::Tensor grad_outputs = grad_outputs_in.contiguous();
  const Operands o = prepare_operands(
      args, grad_outputs, std::nullopt, weight, std::nullopt, delay);
  const auto options = weight.options();
  const std::vector<int64_t> input_shape = {
      steps, s.batch, s.channels, s.height, s.width};
  const bool wants_injected = mask[kInjected] && args.kind == kDeltaPlus;
  // The delta model observes only the input's nonzero pattern, which has no
  // gradient: its inputs' gradient is zero, and no transposed convolution
  // needs to run for it.
  const bool zero_inputs = args.kind == kDelta;
  at::Tensor grad_inputs;
  if (mask[kInputs]) {
    grad_inputs = zero_inputs ? at::zeros(input_shape, options)
                              : at::empty(input_shape, options);
  }
  at::Tensor grad_injected =
      wants_injected ? at::empty(input_shape, options) : at::Tensor();
  at::Tensor grad_weight =
      mask[kWeight] ? at::empty(weight.sizes(), options) : at::Tensor();
  at::Tensor grad_delay = mask[kDelay] && delay.has_value()
                              ? at::empty(weight.sizes(), options)
                              : at::Tensor();
  at::Tensor grad_bias =
      mask[kBias] ? grad_outputs.sum({0, 1, 3, 4}) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(
      weight.scalar_type(), "delayconv_sequence_backward", [&] {
        if ((grad_inputs.defined() && !zero_inputs) ||
            grad_injected.defined()) {
          const at::Tensor observed =
              observation_grads<scalar_t>(args, s, o, steps, grad_outputs);
          input_grads<scalar_t>(
              args, steps, observed, grad_inputs, grad_injected);
        }
        if (!grad_weight.defined() && !grad_delay.defined()) {
          return;
        }
        const Staged<scalar_t> staged = stage_history<scalar_t>(
            args, s, steps, spike_history, current_history);
        weight_and_delay_grads<scalar_t>(
            args, s, o, staged, steps, grad_outputs, grad_weight, grad_delay);
      });

  const auto empty = [&](const at::Tensor& t) {
    return t.defined() ? t : at::empty({0}, options);
  };
  return {empty(grad_inputs),
          empty(grad_injected),
          empty(grad_weight),
          empty(grad_bias),
          empty(grad_delay)};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(delayconv, CPU, m) {
  m.impl("sequence_backward", &cpu::sequence_backward_cpu);
}

}  // namespace delayconv

// Arguments of the step operators, checked once for every backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <array>
#include <optional>

#include "selection.h"
#include "synapse_rule.h"

namespace delayconv {

// The synapse model and convolution settings shared by all step operators.
struct StepArgs {
  int64_t kind;
  int64_t interp;
  double spike_charge;
  double tau_a;
  double tau_b;
  double step_time;
  double max_delay;
  double tolerance;
  std::optional<double> current_overbound;
  std::array<int64_t, 2> stride;
  std::array<int64_t, 2> padding;
  std::array<int64_t, 2> dilation;

  // R: observations in the ring.
  int64_t records() const {
    return ring_records(max_delay, step_time);
  }

  // K: currents the model records beside its spikes.
  int64_t recorded() const {
    return kind == kDelta ? 0 : (kind == kDoubleExponential ? 2 : 1);
  }

  template <typename T>
  ReadoutParams<T> readout() const {
    return {kind,
            interp,
            static_cast<T>(step_time),
            static_cast<T>(spike_charge / step_time),
            static_cast<T>(tau_a),
            static_cast<T>(tau_b)};
  }

  template <typename T>
  SynapseRule<T> rule() const {
    return make_synapse_rule<T>(kind, spike_charge, tau_a, tau_b, step_time);
  }
};

// The operators' trailing arguments (DELAYCONV_STEP_CONFIG in the schemas of
// delayconv.cpp): as a kernel's parameter list, and as the arguments that
// pass them on. Written once, since every kernel of every backend takes them.
#define DELAYCONV_CONFIG_PARAMS                                       \
  c10::IntArrayRef stride, c10::IntArrayRef padding,                  \
      c10::IntArrayRef dilation, int64_t kind, double spike_charge,   \
      double tau_a, double tau_b, double step_time, double max_delay, \
      int64_t interp, double tolerance,                               \
      std::optional<double> current_overbound
#define DELAYCONV_CONFIG_ARGS                                             \
  stride, padding, dilation, kind, spike_charge, tau_a, tau_b, step_time, \
      max_delay, interp, tolerance, current_overbound

// Checks the scalar arguments and packs them.
StepArgs make_step_args(const char* op,
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
                        std::optional<double> current_overbound);

// Sizes of one step: B x C x H x W input, F x C x kH x kW weights,
// B x F x Hout x Wout output, R observations of K recorded currents.
struct StepShape {
  int64_t batch, channels, height, width;
  int64_t filters, kernel_h, kernel_w;
  int64_t out_h, out_w;
  int64_t records, recorded;
};

// Checks every tensor of a step against the ring and the weights and
// returns the sizes; the messages name the argument, the rule, what was
// expected and what came.
StepShape check_step_tensors(const char* op,
                             const StepArgs& args,
                             const at::Tensor& spike_ring,
                             const at::Tensor& current_ring,
                             const at::Tensor& ring_head,
                             const std::optional<at::Tensor>& input,
                             const std::optional<at::Tensor>& injected,
                             const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& delay);

// Checks the T x B x C x H x W inputs (and injected currents) of a sequence
// against the ring's observation shape; returns T.
int64_t check_sequence_inputs(const char* op,
                              const StepShape& s,
                              const at::Tensor& inputs,
                              const std::optional<at::Tensor>& injected,
                              const at::Tensor& weight);

// Checks the gradient and the history a sequence returned, against the
// weights; returns the sizes, and T in `steps`.
StepShape check_history(const char* op,
                        const StepArgs& args,
                        const at::Tensor& grad_outputs,
                        const at::Tensor& spike_history,
                        const at::Tensor& current_history,
                        const at::Tensor& weight,
                        const std::optional<at::Tensor>& delay,
                        int64_t& steps);

}  // namespace delayconv

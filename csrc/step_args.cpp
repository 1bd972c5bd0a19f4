#include "step_args.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <sstream>

namespace delayconv {
namespace {

std::string shape_of(const at::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

std::array<int64_t, 2> pair_arg(const char* op,
                                const char* name,
                                c10::IntArrayRef value,
                                int64_t minimum) {
  TORCH_CHECK(value.size() == 2,
              op,
              ": '",
              name,
              "' must hold 2 values (height, width), got ",
              value.size());
  for (int64_t v : value) {
    TORCH_CHECK(v >= minimum,
                op,
                ": '",
                name,
                "' must be at least ",
                minimum,
                ", got ",
                value);
  }
  return {value[0], value[1]};
}

void check_same_device(const char* op,
                       const char* name,
                       const at::Tensor& t,
                       const at::Tensor& weight) {
  TORCH_CHECK(t.device() == weight.device(),
              op,
              ": '",
              name,
              "' must be on the weight's device ",
              weight.device(),
              ", got ",
              t.device());
}

void check_shape(const char* op,
                 const char* name,
                 const at::Tensor& t,
                 c10::IntArrayRef expected,
                 const char* meaning) {
  TORCH_CHECK(t.sizes() == expected,
              op,
              ": '",
              name,
              "' must have shape ",
              expected,
              " (",
              meaning,
              "), got ",
              shape_of(t));
}

// Output height and width, after checking the padded input holds the
// dilated kernel.
void set_output_size(const char* op, const StepArgs& args, StepShape& s) {
  const int64_t span_h = args.dilation[0] * (s.kernel_h - 1) + 1;
  const int64_t span_w = args.dilation[1] * (s.kernel_w - 1) + 1;
  s.out_h = (s.height + 2 * args.padding[0] - span_h) / args.stride[0] + 1;
  s.out_w = (s.width + 2 * args.padding[1] - span_w) / args.stride[1] + 1;
  TORCH_CHECK(s.height + 2 * args.padding[0] >= span_h &&
                  s.width + 2 * args.padding[1] >= span_w,
              op,
              ": the padded input (",
              s.height + 2 * args.padding[0],
              " x ",
              s.width + 2 * args.padding[1],
              ") is smaller than the dilated kernel (",
              span_h,
              " x ",
              span_w,
              ")");
}

void check_weight(const char* op, const at::Tensor& weight) {
  TORCH_CHECK(
      weight.dim() == 4 && weight.is_floating_point(),
      op,
      ": 'weight' must be a 4-D floating-point tensor (F x C x kH x kW), got ",
      weight.dim(),
      "-D ",
      weight.scalar_type());
}

void check_delay(const char* op,
                 const std::optional<at::Tensor>& delay,
                 const at::Tensor& weight) {
  if (!delay.has_value()) {
    return;
  }
  check_shape(op, "delay", *delay, weight.sizes(), "like the weight");
  TORCH_CHECK(delay->scalar_type() == weight.scalar_type(),
              op,
              ": 'delay' must have the weight's dtype ",
              weight.scalar_type(),
              ", got ",
              delay->scalar_type());
  check_same_device(op, "delay", *delay, weight);
}

}  // namespace

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
                        std::optional<double> current_overbound) {
  TORCH_CHECK(
      kind >= kDelta && kind <= kDoubleExponential,
      op,
      ": 'kind' must be 0 (delta), 1 (delta plus), 2 (single exponential) ",
      "or 3 (double exponential), got ",
      kind);
  TORCH_CHECK(
      interp >= kPrevious && interp <= kLinear,
      op,
      ": 'interp' must be 0 (previous), 1 (nearest) or 2 (linear), got ",
      interp);
  TORCH_CHECK(std::isfinite(step_time) && step_time > 0,
              op,
              ": 'step_time' must be a positive number of ms, got ",
              step_time);
  TORCH_CHECK(std::isfinite(max_delay) && max_delay >= 0,
              op,
              ": 'max_delay' must be a non-negative number of ms, got ",
              max_delay);
  TORCH_CHECK(std::isfinite(tolerance) && tolerance >= 0,
              op,
              ": 'tolerance' must be a non-negative number of ms, got ",
              tolerance);
  TORCH_CHECK(std::isfinite(spike_charge) && spike_charge != 0,
              op,
              ": 'spike_charge' must be nonzero and finite, got ",
              spike_charge);
  if (kind == kSingleExponential || kind == kDoubleExponential) {
    TORCH_CHECK(std::isfinite(tau_a) && tau_a > 0,
                op,
                ": 'tau_a' (the decay time constant) must be positive, got ",
                tau_a);
  }
  if (kind == kDoubleExponential) {
    TORCH_CHECK(
        tau_b > 0 && tau_b < tau_a,
        op,
        ": 'tau_b' (the rise time constant) must be positive and below ",
        "'tau_a' (",
        tau_a,
        "), got ",
        tau_b);
  }

  StepArgs args;
  args.kind = kind;
  args.interp = interp;
  args.spike_charge = spike_charge;
  args.tau_a = tau_a;
  args.tau_b = tau_b;
  args.step_time = step_time;
  args.max_delay = max_delay;
  args.tolerance = tolerance;
  args.current_overbound = current_overbound;
  args.stride = pair_arg(op, "stride", stride, 1);
  args.padding = pair_arg(op, "padding", padding, 0);
  args.dilation = pair_arg(op, "dilation", dilation, 1);
  return args;
}

StepShape check_step_tensors(const char* op,
                             const StepArgs& args,
                             const at::Tensor& spike_ring,
                             const at::Tensor& current_ring,
                             const at::Tensor& ring_head,
                             const std::optional<at::Tensor>& input,
                             const std::optional<at::Tensor>& injected,
                             const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& delay) {
  check_weight(op, weight);
  TORCH_CHECK(
      spike_ring.dim() == 5 && spike_ring.scalar_type() == at::kBool,
      op,
      ": 'spike_ring' must be a 5-D bool tensor (R x B x C x H x W), got ",
      spike_ring.dim(),
      "-D ",
      spike_ring.scalar_type());

  StepShape s;
  s.records = spike_ring.size(0);
  s.batch = spike_ring.size(1);
  s.channels = spike_ring.size(2);
  s.height = spike_ring.size(3);
  s.width = spike_ring.size(4);
  s.filters = weight.size(0);
  s.kernel_h = weight.size(2);
  s.kernel_w = weight.size(3);
  s.recorded = args.recorded();

  TORCH_CHECK(s.records == args.records(),
              op,
              ": 'spike_ring' holds ",
              s.records,
              " observations but a maximum delay of ",
              args.max_delay,
              " ms at steps of ",
              args.step_time,
              " ms needs ",
              args.records());
  TORCH_CHECK(weight.size(1) == s.channels,
              op,
              ": 'weight' has ",
              weight.size(1),
              " input channels but the ring holds ",
              s.channels);

  set_output_size(op, args, s);

  const std::vector<int64_t> observation = {
      s.batch, s.channels, s.height, s.width};
  std::vector<int64_t> currents = {s.recorded, s.records};
  currents.insert(currents.end(), observation.begin(), observation.end());
  check_shape(
      op, "current_ring", current_ring, currents, "K x R x B x C x H x W");
  TORCH_CHECK(current_ring.scalar_type() == weight.scalar_type(),
              op,
              ": 'current_ring' must have the weight's dtype ",
              weight.scalar_type(),
              ", got ",
              current_ring.scalar_type());
  TORCH_CHECK(ring_head.dim() == 0 && ring_head.scalar_type() == at::kLong,
              op,
              ": 'ring_head' must be a 0-D int64 tensor, got ",
              ring_head.dim(),
              "-D ",
              ring_head.scalar_type());
  check_same_device(op, "spike_ring", spike_ring, weight);
  check_same_device(op, "current_ring", current_ring, weight);
  check_same_device(op, "ring_head", ring_head, weight);

  if (input.has_value()) {
    check_shape(op, "input", *input, observation, "B x C x H x W of the ring");
    TORCH_CHECK(!input->is_complex(),
                op,
                ": 'input' must be bool, integer or floating point, got ",
                input->scalar_type());
    check_same_device(op, "input", *input, weight);
  }
  if (injected.has_value()) {
    check_shape(op, "injected", *injected, observation, "B x C x H x W");
    TORCH_CHECK(injected->is_floating_point(),
                op,
                ": 'injected' must be floating point, got ",
                injected->scalar_type());
    check_same_device(op, "injected", *injected, weight);
  }
  if (bias.has_value()) {
    check_shape(op, "bias", *bias, {s.filters}, "F");
    TORCH_CHECK(bias->scalar_type() == weight.scalar_type(),
                op,
                ": 'bias' must have the weight's dtype ",
                weight.scalar_type(),
                ", got ",
                bias->scalar_type());
    check_same_device(op, "bias", *bias, weight);
  }
  check_delay(op, delay, weight);
  return s;
}

int64_t check_sequence_inputs(const char* op,
                              const StepShape& s,
                              const at::Tensor& inputs,
                              const std::optional<at::Tensor>& injected,
                              const at::Tensor& weight) {
  TORCH_CHECK(inputs.dim() == 5,
              op,
              ": 'inputs' must be 5-D (T x B x C x H x W), got ",
              inputs.dim(),
              "-D");
  const int64_t steps = inputs.size(0);
  const std::vector<int64_t> expected = {
      steps, s.batch, s.channels, s.height, s.width};
  check_shape(op, "inputs", inputs, expected, "T x B x C x H x W of the ring");
  TORCH_CHECK(!inputs.is_complex(),
              op,
              ": 'inputs' must be bool, integer or floating point, got ",
              inputs.scalar_type());
  check_same_device(op, "inputs", inputs, weight);
  if (injected.has_value()) {
    check_shape(op, "injected", *injected, expected, "like the inputs");
    TORCH_CHECK(injected->is_floating_point(),
                op,
                ": 'injected' must be floating point, got ",
                injected->scalar_type());
    check_same_device(op, "injected", *injected, weight);
  }
  return steps;
}

StepShape check_history(const char* op,
                        const StepArgs& args,
                        const at::Tensor& grad_outputs,
                        const at::Tensor& spike_history,
                        const at::Tensor& current_history,
                        const at::Tensor& weight,
                        const std::optional<at::Tensor>& delay,
                        int64_t& steps) {
  check_weight(op, weight);
  TORCH_CHECK(
      spike_history.dim() == 5 && spike_history.scalar_type() == at::kBool,
      op,
      ": 'spike_history' must be a 5-D bool tensor ((R + T) x B x C x H x W), ",
      "got ",
      spike_history.dim(),
      "-D ",
      spike_history.scalar_type());

  StepShape s;
  s.records = args.records();
  s.recorded = args.recorded();
  s.batch = spike_history.size(1);
  s.channels = spike_history.size(2);
  s.height = spike_history.size(3);
  s.width = spike_history.size(4);
  s.filters = weight.size(0);
  s.kernel_h = weight.size(2);
  s.kernel_w = weight.size(3);
  steps = spike_history.size(0) - s.records;
  TORCH_CHECK(steps >= 0,
              op,
              ": 'spike_history' holds ",
              spike_history.size(0),
              " observations, fewer than the ",
              s.records,
              " of the ring before the sequence");
  TORCH_CHECK(weight.size(1) == s.channels,
              op,
              ": 'weight' has ",
              weight.size(1),
              " input channels but the history holds ",
              s.channels);
  set_output_size(op, args, s);

  check_shape(
      op,
      "current_history",
      current_history,
      {s.recorded, s.records + steps, s.batch, s.channels, s.height, s.width},
      "K x (R + T) x B x C x H x W");
  TORCH_CHECK(current_history.scalar_type() == weight.scalar_type(),
              op,
              ": 'current_history' must have the weight's dtype ",
              weight.scalar_type(),
              ", got ",
              current_history.scalar_type());
  check_shape(op,
              "grad_outputs",
              grad_outputs,
              {steps, s.batch, s.filters, s.out_h, s.out_w},
              "T x B x F x Hout x Wout");
  TORCH_CHECK(grad_outputs.scalar_type() == weight.scalar_type(),
              op,
              ": 'grad_outputs' must have the weight's dtype ",
              weight.scalar_type(),
              ", got ",
              grad_outputs.scalar_type());
  check_same_device(op, "spike_history", spike_history, weight);
  check_same_device(op, "current_history", current_history, weight);
  check_same_device(op, "grad_outputs", grad_outputs, weight);
  check_delay(op, delay, weight);
  return s;
}

}  // namespace delayconv

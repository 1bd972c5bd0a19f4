// The operands of a CPU step, in the layout and dtype the kernels read.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <optional>

#include "step_args.h"

namespace delayconv {
namespace cpu {

inline void check_cpu_dtype(const char* op, const at::Tensor& weight) {
  TORCH_CHECK(
      weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
      op,
      ": the CPU kernels compute in float32 or float64, got weights of dtype ",
      weight.scalar_type(),
      "; half precision is not supported on the CPU, where it would need a ",
      "float32 copy of the whole ring every step. Convert the layer with ",
      ".float(), or run it on a GPU");
}

// Contiguous operands in the weight dtype. The kernels read bool input (spikes)
// as it is and convert any other input once here; either way its spikes are
// its nonzero elements.
struct Operands {
  at::Tensor input;     // bool, or the weight dtype
  at::Tensor injected;  // undefined unless the model takes injected current
  at::Tensor weight;
  std::optional<at::Tensor> bias;
  std::optional<at::Tensor> delay;
  bool shared_delay;  // every weight has the same delay
};

inline Operands prepare_operands(const StepArgs& args,
                                 const at::Tensor& input,
                                 const std::optional<at::Tensor>& injected,
                                 const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& delay) {
  const auto dtype = weight.scalar_type();
  Operands o;
  o.input = input.scalar_type() == at::kBool ? input.contiguous()
                                             : input.to(dtype).contiguous();
  if (injected.has_value() && args.kind == kDeltaPlus) {
    o.injected = injected->to(dtype).contiguous();
  }
  o.weight = weight.contiguous();
  if (bias.has_value()) {
    o.bias = bias->contiguous();
  }
  o.shared_delay = false;
  if (delay.has_value()) {
    o.delay = delay->contiguous();
    AT_DISPATCH_FLOATING_TYPES(dtype, "delayconv_shared_delay", [&] {
      const scalar_t* d = o.delay->const_data_ptr<scalar_t>();
      const int64_t n = o.delay->numel();
      o.shared_delay =
          std::all_of(d, d + n, [&](scalar_t v) { return v == d[0]; });
    });
  }
  return o;
}

}  // namespace cpu
}  // namespace delayconv

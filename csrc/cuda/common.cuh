// Launch sizes and operand preparation shared by the CUDA kernel files.
//
// Everything here is internal to each file that includes it (an unnamed
// namespace): kernels defined in a header and instantiated in two
// translation units would otherwise be two definitions of one symbol, each
// registered with its own file's device code.
#pragma once

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_convolution.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>

namespace delayconv {
namespace cuda {
namespace {

// Threads per block of every kernel; the kernels that stage taps in shared
// memory stage this many at a time.
constexpr int kThreads = 256;

// Grid-stride launches need no more blocks than this to fill any GPU.
constexpr int64_t kMaxStrideBlocks = 65536;

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Blocks of a grid-stride launch over `count` elements.
inline int64_t stride_blocks(int64_t count) {
  return std::min(ceil_div(count, kThreads), kMaxStrideBlocks);
}

// The input as the update kernels read it: bool spikes and inputs already in
// the weight dtype are read as they are, anything else is converted first.
inline at::Tensor readable_input(const at::Tensor& input,
                                 at::ScalarType dtype) {
  if (input.scalar_type() == at::kBool || input.scalar_type() == dtype) {
    return input.contiguous();
  }
  return input.to(dtype).contiguous();
}

// ATen's 2-D convolution of the undelayed path, in IEEE float32. With
// torch.backends.cudnn.allow_tf32 on (torch's default), cuDNN rounds float32
// operands to 10-bit mantissas on Ampere and newer GPUs, which would put the
// undelayed path about 1e-3 away from the delayed kernels, the CPU and the
// reference library; the other cuDNN settings are the user's, as in conv2d.
inline at::Tensor ieee_conv2d(const at::Tensor& input,
                              const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias,
                              const std::array<int64_t, 2>& stride,
                              const std::array<int64_t, 2>& padding,
                              const std::array<int64_t, 2>& dilation) {
  const at::Context& context = at::globalContext();
  const std::array<int64_t, 2> no_output_padding = {0, 0};
  return at::_convolution(
      input,
      weight,
      bias,
      stride,
      padding,
      dilation,
      /*transposed=*/false,
      no_output_padding,
      /*groups=*/1,
      context.benchmarkCuDNN(),
      context.deterministicCuDNN() || context.deterministicAlgorithms(),
      context.userEnabledCuDNN(),
      /*allow_tf32=*/false);
}

inline void check_cuda_weight(const char* op, const at::Tensor& weight) {
  TORCH_CHECK(weight.is_cuda(),
              op,
              ": the CUDA kernel needs every tensor on one GPU, got the ",
              "weight on ",
              weight.device());
}

}  // namespace
}  // namespace cuda
}  // namespace delayconv

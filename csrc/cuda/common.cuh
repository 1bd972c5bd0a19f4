// Launch sizes and operand preparation shared by the CUDA kernel files.
//
// Everything here is internal to each file that includes it (an unnamed
// namespace): kernels defined in a header and instantiated in two
// translation units would otherwise be two definitions of one symbol, each
// registered with its own file's device code.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

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

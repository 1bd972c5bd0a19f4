// The synapse models' update of one step on the CPU: from the previous
// observation and the input, the newest spikes and recorded currents. The
// rule itself, one element at a time, is synapse_rule.h, shared with the
// CUDA kernels.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <type_traits>

#include "step_args.h"
#include "synapse_rule.h"

namespace delayconv {
namespace cpu {

// Pointers to one observation (B x C x H x W elements) of the spike ring and
// of the recorded currents a and b (b only for the double exponential).
template <typename T>
struct Observation {
  bool* spikes;
  T* a;
  T* b;
};

// Element e of the input as a number. GCC does not vectorize loads or stores
// of bool (it treats bool as one bit wide), so the update moves the spikes'
// bytes as uint8_t, which bool's one-byte 0/1 layout makes equivalent.
template <typename T, typename In>
inline T value_of(const In* input, int64_t e) {
  if constexpr (std::is_same_v<In, bool>) {
    return static_cast<T>(reinterpret_cast<const uint8_t*>(input)[e]);
  } else {
    return static_cast<T>(input[e]);
  }
}

// The loop of update_observation for one model, known at compile time: with
// the rule's switch folded away, the compiler can vectorize it, and the update
// stays a small part of an undelayed step.
template <int64_t Kind, typename T, typename In>
void update_range(SynapseRule<T> u,
                  int64_t begin,
                  int64_t end,
                  const In* input,
                  const T* injected,
                  const Observation<T>& was,
                  const Observation<T>& now,
                  T* current) {
  u.kind = Kind;
  const Observation<T> from = was;
  const Observation<T> to = now;
  const auto loop = [&](auto with_injected, auto with_current) {
    for (int64_t e = begin; e < end; ++e) {
      const T x = value_of<T>(input, e);
      reinterpret_cast<uint8_t*>(to.spikes)[e] =
          static_cast<uint8_t>(x != T(0));
      SynapseState<T> state = load_state<T, T>(Kind, from.a, from.b, e);
      const T newest = update_element<T>(
          u, x, with_injected, with_injected ? injected[e] : T(0), state);
      store_state<T>(Kind, state, to.a, to.b, e);
      if (with_current) {
        current[e] = newest;
      }
    }
  };
  // Each combination its own loop, so that no test is left inside.
  using Yes = std::true_type;
  using No = std::false_type;
  if (injected != nullptr) {
    current != nullptr ? loop(Yes(), Yes()) : loop(Yes(), No());
  } else {
    current != nullptr ? loop(No(), Yes()) : loop(No(), No());
  }
}

// Writes observation `now` from observation `was` and the input (bool or the
// compute type); `injected` may be null. Where `current` is not null it
// receives the newest synaptic current (see update_element), ready for the
// convolution; the callers ask for it where the model does not record it
// (the delta and double-exponential models).
template <typename T, typename In>
void update_observation(const SynapseRule<T>& u,
                        int64_t size,
                        const In* input,
                        const T* injected,
                        const Observation<T>& was,
                        const Observation<T>& now,
                        T* current = nullptr) {
  at::parallel_for(0, size, 16384, [&](int64_t begin, int64_t end) {
    const auto run = [&](auto kind) {
      update_range<decltype(kind)::value, T, In>(
          u, begin, end, input, injected, was, now, current);
    };
    switch (u.kind) {
      case kDelta:
        return run(std::integral_constant<int64_t, kDelta>());
      case kDeltaPlus:
        return run(std::integral_constant<int64_t, kDeltaPlus>());
      case kSingleExponential:
        return run(std::integral_constant<int64_t, kSingleExponential>());
      default:
        return run(std::integral_constant<int64_t, kDoubleExponential>());
    }
  });
}

}  // namespace cpu
}  // namespace delayconv

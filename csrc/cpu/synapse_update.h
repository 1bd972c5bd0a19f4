// The synapse models' update of one step on the CPU: from the previous
// observation and the input, the newest spikes and recorded currents. The
// rule itself, one element at a time, is synapse_rule.h, shared with the
// CUDA kernels.
#pragma once

#include <ATen/Parallel.h>

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
    for (int64_t e = begin; e < end; ++e) {
      const T x = static_cast<T>(input[e]);
      now.spikes[e] = x != T(0);
      SynapseState<T> state = load_state<T, T>(u.kind, was.a, was.b, e);
      const T newest =
          update_element<T>(u,
                            x,
                            injected != nullptr,
                            injected != nullptr ? injected[e] : T(0),
                            state);
      store_state<T>(u.kind, state, now.a, now.b, e);
      if (current != nullptr) {
        current[e] = newest;
      }
    }
  });
}

}  // namespace cpu
}  // namespace delayconv

// The synapse models' update of one step on the CPU: from the previous
// observation and the input, the newest spikes and recorded currents.
#pragma once

#include <ATen/Parallel.h>

#include <cmath>

#include "step_args.h"

namespace delayconv {
namespace cpu {

// The model's per-step constants. The arithmetic matches the reference's
// tensor expressions term by term (the file is built without fused
// multiply-adds), so that the ring agrees with it exactly.
template <typename T>
struct Update {
  int64_t kind;
  T charge_per_step;  // Q / dt
  T decay_a;          // exp(-dt / tau_a)
  T decay_b;          // exp(-dt / tau_b)
  T jump;             // Q / tau, or Q / (tau_d - tau_r)

  explicit Update(const StepArgs& args) : kind(args.kind) {
    charge_per_step = static_cast<T>(args.spike_charge / args.step_time);
    decay_a = kind >= kSingleExponential
                  ? static_cast<T>(std::exp(-args.step_time / args.tau_a))
                  : T(0);
    decay_b = kind == kDoubleExponential
                  ? static_cast<T>(std::exp(-args.step_time / args.tau_b))
                  : T(0);
    jump = kind == kSingleExponential
               ? static_cast<T>(args.spike_charge / args.tau_a)
               : static_cast<T>(args.spike_charge / (args.tau_a - args.tau_b));
  }
};

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
// receives the newest synaptic current of the delta and double-exponential
// models, whose current is not a recorded quantity (Q / dt per spike, P - N),
// ready for the convolution.
template <typename T, typename In>
void update_observation(const Update<T>& u,
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
      switch (u.kind) {
        case kDelta:
          if (current != nullptr) {
            current[e] = x != T(0) ? u.charge_per_step : T(0);
          }
          break;
        case kDeltaPlus: {
          const T scaled = x * u.charge_per_step;
          now.a[e] = injected != nullptr ? scaled + injected[e] : scaled;
          break;
        }
        case kSingleExponential:
          now.a[e] = was.a[e] * u.decay_a + u.jump * x;
          break;
        default:
          now.a[e] = was.a[e] * u.decay_a + u.jump * x;
          now.b[e] = was.b[e] * u.decay_b + u.jump * x;
          if (current != nullptr) {
            current[e] = now.a[e] - now.b[e];
          }
          break;
      }
    }
  });
}

}  // namespace cpu
}  // namespace delayconv

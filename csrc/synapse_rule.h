// The synapse models' update of one element, and its adjoint: the rule both
// backends share, as inline functions callable from host and device code.
//
// T is the compute type and S the storage type of the recorded currents
// (the same on the CPU; float for the half types on a GPU). Every operation
// of the reference's tensor expressions is rounded to S on its own, and
// products go through mul_rn, so that nvcc cannot fuse
// `previous * decay + jump * x` into one FMA: the CPU (built with
// -ffp-contract=off) and the GPU write the same recorded currents.
#pragma once

#include <cmath>
#include <cstdint>

#include "selection.h"

namespace delayconv {

// A model's per-step constants in the compute type.
template <typename T>
struct SynapseRule {
  int64_t kind;
  T charge_per_step;  // Q / dt
  T decay_a;          // exp(-dt / tau_a)
  T decay_b;          // exp(-dt / tau_b)
  T jump;             // Q / tau, or Q / (tau_d - tau_r)
};

// The constants, computed in double and rounded once to T.
template <typename T>
inline SynapseRule<T> make_synapse_rule(int64_t kind,
                                        double spike_charge,
                                        double tau_a,
                                        double tau_b,
                                        double step_time) {
  SynapseRule<T> u;
  u.kind = kind;
  u.charge_per_step = static_cast<T>(spike_charge / step_time);
  u.decay_a = kind >= kSingleExponential
                  ? static_cast<T>(std::exp(-step_time / tau_a))
                  : T(0);
  u.decay_b = kind == kDoubleExponential
                  ? static_cast<T>(std::exp(-step_time / tau_b))
                  : T(0);
  u.jump = kind == kSingleExponential
               ? static_cast<T>(spike_charge / tau_a)
               : static_cast<T>(spike_charge / (tau_a - tau_b));
  return u;
}

// A value rounded to the storage type and widened back. PyTorch rounds the
// result of every half-precision tensor operation, and the reference is a
// chain of such operations; where S is T this is the identity.
template <typename S, typename T>
DC_HOST_DEVICE T stored(T value) {
  return static_cast<T>(static_cast<S>(value));
}

// The recorded currents of one element: a, and b for the double exponential
// (P and N). Unused members are left alone.
template <typename T>
struct SynapseState {
  T a;
  T b;
};

// The recorded currents of element `at` before a step, from the previous
// observation of rings a and b: the delta model records none and the
// delta-plus model does not read its previous one.
template <typename S, typename T>
DC_HOST_DEVICE SynapseState<T> load_state(int64_t kind,
                                          const S* a,
                                          const S* b,
                                          int64_t at) {
  SynapseState<T> state{T(0), T(0)};
  if (kind >= kSingleExponential) {
    state.a = static_cast<T>(a[at]);
  }
  if (kind == kDoubleExponential) {
    state.b = static_cast<T>(b[at]);
  }
  return state;
}

// Writes the recorded currents of element `at` into the newest observation
// of rings a and b, where the model records them.
template <typename S, typename T>
DC_HOST_DEVICE void store_state(
    int64_t kind, const SynapseState<T>& state, S* a, S* b, int64_t at) {
  if (kind >= kDeltaPlus) {
    a[at] = static_cast<S>(state.a);
  }
  if (kind == kDoubleExponential) {
    b[at] = static_cast<S>(state.b);
  }
}

// One step of one element: updates `state` from the input x and, for the
// delta-plus model where `has_injected`, the injected current. Returns the
// newest synaptic current, the image a convolution without delays reads:
// Q / dt per spike for the delta model, P - N for the double exponential,
// the recorded current otherwise.
template <typename S, typename T>
DC_HOST_DEVICE T update_element(const SynapseRule<T>& u,
                                T x,
                                bool has_injected,
                                T injected,
                                SynapseState<T>& state) {
  switch (u.kind) {
    case kDelta:
      return x != T(0) ? u.charge_per_step : T(0);
    case kDeltaPlus: {
      const T scaled = stored<S>(mul_rn(x, u.charge_per_step));
      state.a = has_injected ? stored<S>(scaled + injected) : scaled;
      return state.a;
    }
    case kSingleExponential: {
      const T kept = stored<S>(mul_rn(state.a, u.decay_a));
      state.a = stored<S>(kept + stored<S>(mul_rn(u.jump, x)));
      return state.a;
    }
    default: {
      const T jump = stored<S>(mul_rn(u.jump, x));
      state.a = stored<S>(stored<S>(mul_rn(state.a, u.decay_a)) + jump);
      state.b = stored<S>(stored<S>(mul_rn(state.b, u.decay_b)) + jump);
      return stored<S>(state.a - state.b);
    }
  }
}

// One step back through one element's dynamics, run from the last step to
// the first: from the gradients g_a and g_b of this step's recorded currents
// (as the convolution read them) and the gradient `carried` from later
// steps, returns the gradient of the input x and updates `carried`. The
// delta model's spikes are the input's nonzero pattern, which has no
// gradient; the delta-plus model's injected current has gradient g_a.
template <typename T>
DC_HOST_DEVICE T input_gradient(const SynapseRule<T>& u,
                                T g_a,
                                T g_b,
                                SynapseState<T>& carried) {
  switch (u.kind) {
    case kDelta:
      return T(0);
    case kDeltaPlus:
      return mul_rn(g_a, u.charge_per_step);
    case kSingleExponential:
      carried.a = g_a + mul_rn(u.decay_a, carried.a);
      return mul_rn(u.jump, carried.a);
    default:
      carried.a = g_a + mul_rn(u.decay_a, carried.a);
      carried.b = g_b + mul_rn(u.decay_b, carried.b);
      return mul_rn(u.jump, carried.a + carried.b);
  }
}

}  // namespace delayconv

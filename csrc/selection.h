// Reading a ring of past observations at a delay: the rules both backends
// share, as inline functions callable from host and device code.
//
// A ring holds the last R observations; slot `head` holds the newest and
// slot (head - k) mod R the one k steps back. A delay of t ms reads between
// the observations floor(t / dt) and ceil(t / dt) steps back. The arithmetic
// repeats the reference library's tensor operations one by one, in the
// delay's dtype and without fused multiply-adds, so that the step a delay
// lands on agrees bit for bit with it.
#pragma once

#include <cmath>
#include <cstdint>

// Forced inline on both sides: called once per element in the kernels' inner
// loops, a helper left out of line costs a call and keeps the loop scalar.
#if defined(__CUDACC__)
#define DC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DC_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace delayconv {

// Synapse models and interpolation modes; the values are the operator
// contract (delayconv/kinds.py holds the same numbers).
enum SynapseKind : int64_t {
  kDelta = 0,
  kDeltaPlus = 1,
  kSingleExponential = 2,
  kDoubleExponential = 3,
};

enum Interpolation : int64_t {
  kPrevious = 0,
  kNearest = 1,
  kLinear = 2,
};

// Products and differences rounded on their own. nvcc contracts a * b - c
// into one fused operation by default, which rounds once instead of twice
// and can move a delay across a step boundary.
DC_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

DC_HOST_DEVICE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

DC_HOST_DEVICE float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

DC_HOST_DEVICE double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

// Observations a ring keeps to reach max_delay ms back.
DC_HOST_DEVICE int64_t ring_records(double max_delay, double step_time) {
  const double steps = ::ceil(max_delay / step_time);
  return steps + 1 > 1 ? static_cast<int64_t>(steps) + 1 : 1;
}

// Steps back from the newest observation to an absolute ring slot.
DC_HOST_DEVICE int64_t slot_back(int64_t head, int64_t steps, int64_t records) {
  const int64_t slot = (head - steps) % records;
  return slot < 0 ? slot + records : slot;
}

// Where a delay lands: the observations it reads between, in steps back,
// the time s from the older one to the sample point, and whether the delay
// lies within tolerance of [0, max_delay].
template <typename T>
struct Location {
  int64_t older;
  int64_t newer;
  T since_older;
  bool inbound;
};

template <typename T>
DC_HOST_DEVICE Location<T> locate(
    T delay, T step_time, T max_delay, T tolerance, int64_t records) {
  Location<T> where;
  if (records == 1) {
    where.older = 0;
    where.newer = 0;
    where.since_older = T(0);
    where.inbound = ::fabs(delay) <= tolerance;
    return where;
  }

  const T bounded =
      delay < T(0) ? T(0) : (delay > max_delay ? max_delay : delay);
  T shift = bounded / step_time;
  const T rounded = ::rint(shift);
  if (::fabs(sub_rn(mul_rn(step_time, rounded), bounded)) <= tolerance) {
    shift = rounded;
  }

  const T whole = ::floor(shift);
  where.older = static_cast<int64_t>(::ceil(shift));
  where.newer = static_cast<int64_t>(whole);
  where.since_older =
      sub_rn(step_time, mul_rn(step_time, sub_rn(shift, whole)));
  where.inbound = ::fabs(sub_rn(delay, bounded)) <= tolerance;
  return where;
}

// The model's constants as the selection needs them, in the compute dtype.
template <typename T>
struct ReadoutParams {
  int64_t kind;
  int64_t interp;
  T step_time;
  T charge_per_step;  // Q / dt, a delta synapse's current per spike
  T tau_a;            // single time constant, or the decay constant
  T tau_b;            // rise constant of the double exponential
};

// Readout rings of a model: the rings its delayed current is read from.
DC_HOST_DEVICE int readout_rings(int64_t kind) {
  return kind == kDoubleExponential ? 2 : 1;
}

// Weights of the older and newer observation of readout ring `ring` in the
// delayed current: current = sum over rings of older * ring[older] +
// newer * ring[newer]. For an exact read only `older` counts.
template <typename T>
struct TapPair {
  T older;
  T newer;
};

template <typename T>
DC_HOST_DEVICE TapPair<T> tap_pair(const ReadoutParams<T>& p,
                                   const Location<T>& where,
                                   int ring) {
  const bool exact = where.older == where.newer;
  const T s = where.since_older;
  TapPair<T> pair{T(1), T(0)};

  if (p.kind == kDelta || p.kind == kDeltaPlus) {
    if (!exact && p.interp == kNearest && s / p.step_time > T(0.5)) {
      pair = {T(0), T(1)};
    } else if (!exact && p.interp == kLinear) {
      const T fraction = s / p.step_time;
      pair = {T(1) - fraction, fraction};
    }
    if (p.kind == kDelta) {
      pair.older = mul_rn(pair.older, p.charge_per_step);
      pair.newer = mul_rn(pair.newer, p.charge_per_step);
    }
    return pair;
  }

  const T tau = ring == 0 ? p.tau_a : p.tau_b;
  const T decay = exact ? T(1) : ::exp(-s / tau);
  pair.older = ring == 0 ? decay : -decay;
  return pair;
}

// The derivative of a delayed read with respect to the delay, as
// d(read)/d(delay) = d_older * ring[older] + d_newer * ring[newer].
//
// The read itself is flat where a delay snaps onto an observation, so the
// gradient is defined by the interpolation formula on the step interval
// [newer, older] = [k, k + 1] holding the delay: the right derivative at an
// observation, the left one at the last observation, and zero outside
// [0, max_delay], where the delay is clamped. reference.gradient_taps states
// the same rule in PyTorch.
template <typename T>
struct Slope {
  int64_t older;
  int64_t newer;
  T d_older;
  T d_newer;
};

template <typename T>
DC_HOST_DEVICE Slope<T> read_slope(const ReadoutParams<T>& p,
                                   T delay,
                                   T max_delay,
                                   int64_t records,
                                   int ring) {
  Slope<T> slope{1, 0, T(0), T(0)};
  const bool inside = delay >= T(0) && delay <= max_delay;
  if (records < 2 || !inside) {
    return slope;
  }

  const int64_t last = records - 2;
  int64_t newer = static_cast<int64_t>(::floor(delay / p.step_time));
  newer = newer < 0 ? 0 : (newer > last ? last : newer);
  slope.newer = newer;
  slope.older = newer + 1;
  const T s = mul_rn(static_cast<T>(slope.older), p.step_time) - delay;

  if (p.kind == kDelta || p.kind == kDeltaPlus) {
    const T scale = p.kind == kDelta ? p.charge_per_step : T(1);
    slope.d_older = scale / p.step_time;
    slope.d_newer = -slope.d_older;
    return slope;
  }
  const T tau = ring == 0 ? p.tau_a : p.tau_b;
  const T rate = ::exp(-s / tau) / tau;
  slope.d_older = ring == 0 ? rate : -rate;
  return slope;
}

}  // namespace delayconv

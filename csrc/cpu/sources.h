// Where the CPU kernels read observations from.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/taps.h"

namespace delayconv {
namespace cpu {

// Source observations of the readout rings: ring a, and ring b of the double
// exponential. S is bool for a delta synapse's spikes, else the compute type.
template <typename S>
struct Sources {
  const S* a;
  const S* b;
  Observations where;

  // The H x W plane bc = (batch, channel) of readout ring `ring`, `steps`
  // back from the newest observation of step t.
  const S* plane(
      int64_t ring, int64_t steps, int64_t t, int64_t bc, int64_t area) const {
    const S* base = ring == 0 ? a : b;
    return base + where.plane_offset(t, steps, bc, area);
  }
};

}  // namespace cpu
}  // namespace delayconv

// The convolution when every weight reads the same observation time: one
// selected image per step, convolved densely by ATen (oneDNN), which beats
// any direct loop when all weights share their input.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/conv2d.h>

#include "cpu/operands.h"
#include "cpu/taps.h"
#include "selection.h"
#include "step_args.h"

namespace delayconv {
namespace cpu {

// Observations of the spike ring and the recorded currents, with where the
// observation some steps back of each step lives.
struct RingView {
  const at::Tensor& spikes;    // N x B x C x H x W
  const at::Tensor& currents;  // K x N x B x C x H x W
  Observations where;

  // Readout ring `ring`, `steps` back, for `count` consecutive steps, in the
  // compute dtype: count x B x C x H x W.
  at::Tensor select(int ring, int64_t steps, int64_t count) const {
    const int64_t first = where.index(0, steps);
    if (currents.size(0) == 0) {
      return spikes.narrow(0, first, count).to(currents.scalar_type());
    }
    return currents[ring].narrow(0, first, count);
  }
};

// out[t] = conv2d(selected image of step t) for `count` steps, every weight
// reading at the shared delay (or the newest observation without delays).
template <typename T>
at::Tensor convolve_selected(const StepArgs& args,
                             const StepShape& s,
                             const RingView& ring,
                             const Operands& o,
                             int64_t count) {
  const Location<T> where = !o.delay.has_value()
                                ? Location<T>{0, 0, T(0), true}
                                : locate(o.delay->const_data_ptr<T>()[0],
                                         static_cast<T>(args.step_time),
                                         static_cast<T>(args.max_delay),
                                         static_cast<T>(args.tolerance),
                                         s.records);

  if (!where.inbound && args.current_overbound.has_value()) {
    // Every weight reads the overbound value, at every position.
    at::Tensor per_filter = o.weight.sum({1, 2, 3}) * *args.current_overbound;
    if (o.bias.has_value()) {
      per_filter = per_filter + *o.bias;
    }
    return per_filter.view({1, s.filters, 1, 1})
        .expand({count * s.batch, s.filters, s.out_h, s.out_w})
        .contiguous();
  }

  const ReadoutParams<T> readout = args.readout<T>();
  at::Tensor image;
  for (int r = 0; r < readout_rings(args.kind); ++r) {
    const TapPair<T> pair = tap_pair(readout, where, r);
    at::Tensor term = ring.select(r, where.older, count) * pair.older;
    if (pair.newer != T(0) && where.newer != where.older) {
      term = term + ring.select(r, where.newer, count) * pair.newer;
    }
    image = image.defined() ? image + term : term;
  }
  image = image.reshape({count * s.batch, s.channels, s.height, s.width});
  return at::conv2d(
      image, o.weight, o.bias, args.stride, args.padding, args.dilation);
}

}  // namespace cpu
}  // namespace delayconv

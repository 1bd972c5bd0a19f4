// Zero-padded copies of the observations a forward pass reads, in the compute
// type.
//
// With the padding in memory, every tap reads whole rows: the inner loops need
// no bounds, and the vectorized one no masked loads at the edges. A delta
// synapse's spikes become numbers here too, once, instead of in the inner
// loop. The copy costs one pass over the ring, a small part of the
// convolution it feeds.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>

#include "cpu/taps.h"

namespace delayconv {
namespace cpu {

// Elements past the last plane that whole-block loads may read: up to four
// rows of a block beyond the output's last, and a block's width beyond its
// last column.
inline int64_t staging_slack(const Planes& p) {
  return (4 * p.stride_h + 2) * (p.width + 2 * p.pad_w) + 64;
}

// Padded planes: readouts x observations x (B x C) x Hp x Wp, where the
// observation a step reads some steps back is found as in the source.
template <typename T>
struct Staged {
  at::Tensor data;
  const T* base;  // data's elements, read once: tensors check on every read
  Observations where;  // with size counted in padded elements
  int64_t padded_h;
  int64_t padded_w;
  int64_t ring_size;

  int64_t area() const {
    return padded_h * padded_w;
  }

  // The padded plane bc = (batch, channel) of readout ring `ring`, `steps`
  // back from the newest observation of step t.
  const T* plane(int64_t ring, int64_t steps, int64_t t, int64_t bc) const {
    return base + ring * ring_size + where.plane_offset(t, steps, bc, area());
  }
};

// The planes one step reads, with the observation some steps back found once
// per step rather than once per tap (a ring's slot takes a division).
template <typename T>
struct StepPlanes {
  std::vector<const T*> starts;  // per (ring, steps back)
  int64_t records;
  int64_t area;

  const T* plane(int64_t ring, int64_t steps, int64_t bc) const {
    return starts[ring * records + steps] + bc * area;
  }
};

template <typename T>
StepPlanes<T> planes_of_step(const Staged<T>& staged,
                             int readouts,
                             int64_t records,
                             int64_t t) {
  StepPlanes<T> view{{}, records, staged.area()};
  view.starts.reserve(readouts * records);
  for (int ring = 0; ring < readouts; ++ring) {
    for (int64_t steps = 0; steps < records; ++steps) {
      view.starts.push_back(staged.plane(ring, steps, t, 0));
    }
  }
  return view;
}

// Copies `observations` observations of each readout ring (a, and b for the
// double exponential; b may be null) into padded planes.
template <typename T, typename S>
Staged<T> stage(const S* a,
                const S* b,
                int64_t observations,
                Observations where,
                const StepShape& s,
                const Planes& p,
                const at::TensorOptions& options) {
  Staged<T> staged;
  staged.padded_h = p.height + 2 * p.pad_h;
  staged.padded_w = p.width + 2 * p.pad_w;
  const int64_t planes = observations * s.batch * s.channels;
  const int64_t area = p.height * p.width;
  // Observations lie one cache line or two further apart than their size:
  // with power-of-two planes (32 x 32, say), equal strides would map the same
  // row of every observation to one cache set, and the R planes a channel's
  // taps read would evict one another.
  const int64_t observation = s.batch * s.channels * staged.area() + 16;
  staged.ring_size = observations * observation;
  const int readouts = b == nullptr ? 1 : 2;
  const int64_t slack = staging_slack(p);
  staged.data = at::empty({readouts * staged.ring_size + slack}, options);
  staged.where = where;
  staged.where.size = observation;

  T* out = staged.data.template data_ptr<T>();
  staged.base = out;
  std::fill(out + readouts * staged.ring_size,
            out + readouts * staged.ring_size + slack,
            T(0));
  // The gaps between observations are read too (past a plane's last row),
  // so they hold zeros rather than whatever the allocator left.
  const int64_t filled = s.batch * s.channels * staged.area();
  for (int64_t k = 0; k < readouts * observations; ++k) {
    T* gap = out + k * observation + filled;
    std::fill(gap, gap + (observation - filled), T(0));
  }
  const int64_t per_observation = s.batch * s.channels;
  at::parallel_for(0, readouts * planes, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t ring = k / planes;
      const int64_t obs = (k % planes) / per_observation;
      const int64_t bc = k % per_observation;
      const S* source = (ring == 0 ? a : b) + (k % planes) * area;
      T* target = out + ring * staged.ring_size + obs * observation +
                  bc * staged.area();
      const int64_t width = staged.padded_w;
      const int64_t top = p.pad_h * width;
      std::fill(target, target + top, T(0));
      for (int64_t y = 0; y < p.height; ++y) {
        T* row = target + top + y * width;
        const S* from = source + y * p.width;
        std::fill(row, row + p.pad_w, T(0));
        for (int64_t x = 0; x < p.width; ++x) {
          row[p.pad_w + x] = static_cast<T>(from[x]);
        }
        std::fill(row + p.pad_w + p.width, row + width, T(0));
      }
      std::fill(target + top + p.height * width, target + staged.area(), T(0));
    }
  });
  return staged;
}

// Stages a sequence's whole history (R + T observations, oldest first): the
// spikes for a delta synapse, else the recorded currents.
template <typename T>
Staged<T> stage_history(const StepArgs& args,
                        const StepShape& s,
                        int64_t steps,
                        const at::Tensor& spike_history,
                        const at::Tensor& current_history) {
  const int64_t observations = s.records + steps;
  const int64_t size = s.batch * s.channels * s.height * s.width;
  const Observations where{s.records, 0, size};
  const Planes planes(args, s);
  const auto options = current_history.options();
  if (args.kind == kDelta) {
    return stage<T, bool>(spike_history.template const_data_ptr<bool>(),
                          nullptr,
                          observations,
                          where,
                          s,
                          planes,
                          options);
  }
  const T* a = current_history.template const_data_ptr<T>();
  const T* b = s.recorded > 1 ? a + current_history.numel() / 2 : nullptr;
  return stage<T, T>(a, b, observations, where, s, planes, options);
}

}  // namespace cpu
}  // namespace delayconv

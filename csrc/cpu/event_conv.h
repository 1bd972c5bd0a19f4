// The event-driven convolution over a delta synapse's delayed spikes on the
// CPU: each spike adds its taps' values to the outputs it reaches.
//
// A delta synapse observes spikes, 0 or 1, and most of them are 0: inputs of
// spiking networks are typically 1 to 20 percent dense. The direct
// convolution of direct_conv.h costs a multiply-add per tap and output
// position whatever the input holds; this one costs an addition per tap and
// spike. Its additions land on scattered positions and do not vectorize, so
// it wins only on sparse enough input: `prefer_events` decides, per call,
// from the spikes the call reads.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/taps.h"

namespace delayconv {
namespace cpu {

// Spikes per plane and output position under which the event-driven kernel
// runs. On a 2-core AMD EPYC VM (2026-12, one and two threads) the two kernels
// cost the same near 0.09 on the nmnist-d10 benchmark layer (5 x 5 kernel,
// delays up to 10 steps) and near 0.11 on hidden-d5 (3 x 3, up to 5 steps);
// the bound sits below both, where the event-driven kernel still wins.
constexpr double kEventDensity = 0.08;

// The accumulator that spikes add to: the input plane grown by the kernel's
// extent, so that every tap of every spike lands inside it and the inner
// loop needs no bounds. Row a holds output row o where
// a = o * stride - pad + (kernel - 1) * dilation.
struct EventGrid {
  int64_t height;
  int64_t width;
  int64_t top;   // (kernel_h - 1) * dil_h: row a of output row 0, plus pad_h
  int64_t left;  // (kernel_w - 1) * dil_w

  EventGrid(const StepShape& s, const Planes& p)
      : height(p.height + (s.kernel_h - 1) * p.dil_h),
        width(p.width + (s.kernel_w - 1) * p.dil_w),
        top((s.kernel_h - 1) * p.dil_h),
        left((s.kernel_w - 1) * p.dil_w) {}

  int64_t area() const {
    return height * width;
  }

  // Where a spike at input (0, 0) lands through kernel offset (i, j).
  int64_t tap_offset(const Planes& p, int64_t i, int64_t j) const {
    return (top - i * p.dil_h) * width + (left - j * p.dil_w);
  }
};

// The spiking positions of every (observation, batch, channel) plane, as
// offsets into the EventGrid: plane k's are at[begin[k]] .. at[begin[k + 1]].
struct SpikeEvents {
  std::vector<int64_t> begin;
  std::vector<int32_t> at;
};

// DELAYCONV_SPIKE_EVENTS=1 runs the event-driven kernel wherever it applies
// and =0 never; unset, the spike density decides. The tests use it to hold
// both kernels to the same answers.
inline int forced_events() {
  const char* value = std::getenv("DELAYCONV_SPIKE_EVENTS");
  if (value == nullptr || value[0] == '\0') {
    return -1;
  }
  return std::strcmp(value, "0") == 0 ? 0 : 1;
}

// Counts the spikes of each plane; the caller decides from the total whether
// listing them is worth it.
inline std::vector<int64_t> count_spikes(const bool* spikes,
                                         int64_t planes,
                                         int64_t area) {
  std::vector<int64_t> begin(planes + 1, 0);
  at::parallel_for(0, planes, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      // Bytes hold 0 or 1: summing them as integers vectorizes.
      const uint8_t* bytes =
          reinterpret_cast<const uint8_t*>(spikes + k * area);
      int64_t count = 0;
      for (int64_t e = 0; e < area; ++e) {
        count += bytes[e];
      }
      begin[k + 1] = count;
    }
  });
  for (int64_t k = 0; k < planes; ++k) {
    begin[k + 1] += begin[k];
  }
  return begin;
}

// Spikes per plane and output position, the measure kEventDensity bounds.
inline double spikes_per_output(int64_t spikes,
                                int64_t planes,
                                const Planes& p) {
  return static_cast<double>(spikes) / static_cast<double>(planes) /
         static_cast<double>(p.out_h * p.out_w);
}

// Whether the event-driven kernel should run over `spikes`, `observations`
// observations of B x C planes, for a delta synapse with per-weight delays;
// if so, lists the spikes into `events`. Observation `newest` is counted
// first: when it alone is too dense, the others are not scanned, which keeps
// the direct convolution's steps over dense input from paying for the count.
inline bool prefer_events(const bool* spikes,
                          int64_t observations,
                          int64_t newest,
                          const StepShape& s,
                          const Planes& p,
                          SpikeEvents& events) {
  const int forced = forced_events();
  const EventGrid grid(s, p);
  // Offsets are 32-bit to halve the lists' traffic.
  if (forced == 0 || grid.area() > std::numeric_limits<int32_t>::max() / 2) {
    return false;
  }
  const int64_t area = p.height * p.width;
  const int64_t bc = s.batch * s.channels;
  if (forced != 1) {
    const std::vector<int64_t> sample =
        count_spikes(spikes + newest * bc * area, bc, area);
    if (!(spikes_per_output(sample[bc], bc, p) < kEventDensity)) {
      return false;
    }
  }
  const int64_t planes = observations * bc;
  std::vector<int64_t> begin = count_spikes(spikes, planes, area);
  if (forced != 1 &&
      !(spikes_per_output(begin[planes], planes, p) < kEventDensity)) {
    return false;
  }

  events.at.resize(begin[planes]);
  at::parallel_for(0, planes, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      if (begin[k + 1] == begin[k]) {
        continue;
      }
      const uint8_t* plane =
          reinterpret_cast<const uint8_t*>(spikes + k * area);
      int32_t* to = events.at.data() + begin[k];
      for (int64_t y = 0; y < p.height; ++y) {
        const uint8_t* row = plane + y * p.width;
        const int32_t first = static_cast<int32_t>(y * grid.width);
        int64_t x = 0;
        // Eight positions at a time: most words of a sparse row are zero.
        for (; x + 8 <= p.width; x += 8) {
          uint64_t word;
          std::memcpy(&word, row + x, 8);
          while (word != 0) {
            const int byte = __builtin_ctzll(word) / 8;
            *to++ = first + static_cast<int32_t>(x + byte);
            word &= ~(uint64_t{0xff} << (8 * byte));
          }
        }
        for (; x < p.width; ++x) {
          if (row[x] != 0) {
            *to++ = first + static_cast<int32_t>(x);
          }
        }
      }
    }
  });
  events.begin = std::move(begin);
  return true;
}

// Output planes of `steps` steps from listed spikes: out[t, b, f] = sum over
// the taps of filter f of value * observation, plus the bias and the
// overbound constant, as forward_planes computes it from staged planes.
//
// A task owns one output plane and adds every spike its filter's taps read
// into a grid held in L1; the grid's rows at the output positions are then
// copied out.
template <typename T>
void forward_events(const StepShape& s,
                    const Planes& p,
                    const TapTable<T>& table,
                    const SpikeEvents& events,
                    const Observations& where,
                    int64_t steps,
                    const T* bias,
                    T* out) {
  const EventGrid grid(s, p);
  const int64_t out_area = p.out_h * p.out_w;
  const int64_t bc = s.batch * s.channels;
  const int64_t tasks = steps * s.batch * s.filters;
  // Output columns whose grid column lies inside the grid.
  const Span cols =
      valid_span(p.out_w, grid.width, p.stride_w, p.pad_w, grid.left);

  at::parallel_for(0, tasks, 4, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(grid.area());
    // The first plane of batch b of the observation each tap's steps back
    // names, found once per (t, b) rather than once per tap.
    std::vector<int64_t> first_plane(s.records);
    int64_t tb_seen = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t f = task % s.filters;
      const int64_t tb = task / s.filters;
      if (tb != tb_seen) {
        const int64_t b = tb % s.batch;
        for (int64_t k = 0; k < s.records; ++k) {
          first_plane[k] = where.index(tb / s.batch, k) * bc + b * s.channels;
        }
        tb_seen = tb;
      }
      std::fill(acc.begin(), acc.end(), T(0));
      for (const Tap<T>& tap : table.per_filter[f]) {
        const int64_t plane = first_plane[tap.steps] + tap.c;
        const int32_t* first = events.at.data() + events.begin[plane];
        const int32_t* last = events.at.data() + events.begin[plane + 1];
        T* base = acc.data() + grid.tap_offset(p, tap.i, tap.j);
        const T value = tap.value;
        const int32_t* e = first;
        // Positions within one list are distinct, so four loads may go
        // ahead of the four stores.
        for (; last - e >= 4; e += 4) {
          const T a = base[e[0]] + value;
          const T b = base[e[1]] + value;
          const T c = base[e[2]] + value;
          const T d = base[e[3]] + value;
          base[e[0]] = a;
          base[e[1]] = b;
          base[e[2]] = c;
          base[e[3]] = d;
        }
        for (; e != last; ++e) {
          base[*e] += value;
        }
      }

      const T shift = table.constant[f] + (bias != nullptr ? bias[f] : T(0));
      T* o = out + task * out_area;
      for (int64_t y = 0; y < p.out_h; ++y) {
        T* row = o + y * p.out_w;
        std::fill(row, row + p.out_w, shift);
        const int64_t a = y * p.stride_h - p.pad_h + grid.top;
        if (a < 0 || a >= grid.height) {
          continue;
        }
        const T* from = acc.data() + a * grid.width - p.pad_w + grid.left;
        for (int64_t x = cols.lo; x < cols.hi; ++x) {
          row[x] += from[x * p.stride_w];
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace delayconv

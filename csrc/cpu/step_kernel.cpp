// CPU kernels of the step operators: the synapse update writes the newest
// observation into the ring, then each output plane is accumulated from the
// observations its weights' delays select.
//
// Which convolution runs depends on the delays:
// - no delays, or one delay shared by every weight: the selected currents
//   form one image, and ATen's convolution (oneDNN) is the fastest way to
//   convolve it;
// - per-weight delays: every weight reads its own ring slot, which no dense
//   convolution library can express without one convolution per slot, so a
//   direct convolution accumulates each output plane from the taps of its
//   filter, row by row. Its inner loop is a contiguous multiply-add over an
//   output row that the compiler vectorizes.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>

#include "cpu/taps.h"
#include "selection.h"
#include "step_args.h"

namespace delayconv {
namespace cpu {
namespace {

constexpr const char* kStepInPlace = "delayconv.step_";

// The synapse model's update of one element: writes the newest spike and
// recorded currents at slot `next` from those at slot `previous`. The
// arithmetic matches the reference's tensor expressions term by term.
template <typename T>
struct Update {
  int64_t kind;
  T charge_per_step;  // Q / dt
  T decay_a;          // exp(-dt / tau_a)
  T decay_b;          // exp(-dt / tau_b)
  T jump;             // Q / tau, or Q / (tau_d - tau_r)

  Update(const StepArgs& args) : kind(args.kind) {
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

template <typename T>
void update_ring(const StepArgs& args,
                 const StepShape& s,
                 const T* input,
                 const T* injected,
                 bool* spike_ring,
                 T* current_ring,
                 int64_t previous,
                 int64_t next) {
  const Update<T> u(args);
  const int64_t size = s.batch * s.channels * s.height * s.width;
  const int64_t ring_size = s.records * size;
  bool* spikes = spike_ring + next * size;
  T* now_a = current_ring + next * size;
  const T* was_a = current_ring + previous * size;
  T* now_b = now_a + ring_size;
  const T* was_b = was_a + ring_size;

  at::parallel_for(0, size, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const T x = input[e];
      spikes[e] = x != T(0);
      switch (u.kind) {
        case kDeltaPlus: {
          const T scaled = x * u.charge_per_step;
          now_a[e] = injected != nullptr ? scaled + injected[e] : scaled;
          break;
        }
        case kSingleExponential:
          now_a[e] = was_a[e] * u.decay_a + u.jump * x;
          break;
        case kDoubleExponential:
          now_a[e] = was_a[e] * u.decay_a + u.jump * x;
          now_b[e] = was_b[e] * u.decay_b + u.jump * x;
          break;
        default:
          break;
      }
    }
  });
}

// The newest synaptic current as a B x C x H x W image.
at::Tensor latest_current(const StepArgs& args,
                          const at::Tensor& spike_ring,
                          const at::Tensor& current_ring,
                          int64_t head) {
  switch (args.kind) {
    case kDelta:
      return spike_ring[head].to(current_ring.scalar_type()) *
             (args.spike_charge / args.step_time);
    case kDoubleExponential:
      return current_ring[0][head] - current_ring[1][head];
    default:
      return current_ring[0][head];
  }
}

// One readout ring's B x C x H x W observation at an absolute slot, as the
// compute dtype.
at::Tensor readout_image(const StepArgs& args,
                         const at::Tensor& spike_ring,
                         const at::Tensor& current_ring,
                         int ring,
                         int64_t slot) {
  if (args.kind == kDelta) {
    return spike_ring[slot].to(current_ring.scalar_type());
  }
  return current_ring[ring][slot];
}

// The convolution when every weight has the same delay: select one image,
// then convolve it densely.
template <typename T>
at::Tensor shared_delay_conv(const StepArgs& args,
                             const StepShape& s,
                             const at::Tensor& spike_ring,
                             const at::Tensor& current_ring,
                             int64_t head,
                             const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             T delay) {
  const Location<T> where = locate(delay,
                                   static_cast<T>(args.step_time),
                                   static_cast<T>(args.max_delay),
                                   static_cast<T>(args.tolerance),
                                   s.records);

  if (!where.inbound && args.current_overbound.has_value()) {
    // Every weight reads the overbound value, at every position.
    const double value = *args.current_overbound;
    at::Tensor per_filter = weight.sum({1, 2, 3}) * value;
    if (bias.has_value()) {
      per_filter = per_filter + *bias;
    }
    return per_filter.view({1, s.filters, 1, 1})
        .expand({s.batch, s.filters, s.out_h, s.out_w})
        .contiguous();
  }

  const ReadoutParams<T> readout = args.readout<T>();
  const int64_t older = slot_back(head, where.older, s.records);
  const int64_t newer = slot_back(head, where.newer, s.records);
  at::Tensor image;
  for (int ring = 0; ring < readout_rings(args.kind); ++ring) {
    const TapPair<T> pair = tap_pair(readout, where, ring);
    at::Tensor term =
        readout_image(args, spike_ring, current_ring, ring, older) * pair.older;
    if (pair.newer != T(0) && newer != older) {
      term = term + readout_image(args, spike_ring, current_ring, ring, newer) *
                        pair.newer;
    }
    image = image.defined() ? image + term : term;
  }
  return at::conv2d(
      image, weight, bias, args.stride, args.padding, args.dilation);
}

// Adds value * source[row, x * stride + offset] to out[x] for x in [lo, hi).
template <typename T, typename S>
inline void accumulate_row(T* out,
                           const S* source,
                           T value,
                           int64_t lo,
                           int64_t hi,
                           int64_t stride,
                           int64_t offset) {
  if (stride == 1) {
    const S* shifted = source + offset;
    for (int64_t x = lo; x < hi; ++x) {
      out[x] += value * static_cast<T>(shifted[x]);
    }
  } else {
    for (int64_t x = lo; x < hi; ++x) {
      out[x] += value * static_cast<T>(source[x * stride + offset]);
    }
  }
}

// The convolution with a delay per weight, one output plane (b, f) at a time.
template <typename T, typename S>
void per_weight_delay_conv(const StepArgs& args,
                           const StepShape& s,
                           const TapTable<T>& table,
                           const S* ring_a,
                           const S* ring_b,
                           const T* bias,
                           T* out) {
  const int64_t plane = s.height * s.width;
  const int64_t out_plane = s.out_h * s.out_w;
  const int64_t observation = s.batch * s.channels * plane;
  const auto [sh, sw] = args.stride;
  const auto [ph, pw] = args.padding;
  const auto [dh, dw] = args.dilation;

  at::parallel_for(0, s.batch * s.filters, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.filters;
      const int64_t f = task % s.filters;
      T* o = out + task * out_plane;
      std::fill(o, o + out_plane, T(0));

      for (const Tap<T>& tap : table.per_filter[f]) {
        const S* ring = tap.ring == 0 ? ring_a : ring_b;
        const S* source =
            ring + tap.slot * observation + (b * s.channels + tap.c) * plane;
        const Span rows = valid_span(s.out_h, s.height, sh, ph, tap.i * dh);
        const Span cols = valid_span(s.out_w, s.width, sw, pw, tap.j * dw);
        const int64_t offset = tap.j * dw - pw;
        for (int64_t y = rows.lo; y < rows.hi; ++y) {
          const S* row = source + (y * sh - ph + tap.i * dh) * s.width;
          accumulate_row(
              o + y * s.out_w, row, tap.value, cols.lo, cols.hi, sw, offset);
        }
      }

      const T shift = table.constant[f] + (bias != nullptr ? bias[f] : T(0));
      if (shift != T(0)) {
        for (int64_t e = 0; e < out_plane; ++e) {
          o[e] += shift;
        }
      }
    }
  });
}

template <typename T>
bool all_equal(const at::Tensor& t) {
  const T* data = t.const_data_ptr<T>();
  const int64_t n = t.numel();
  return std::all_of(data, data + n, [&](T v) { return v == data[0]; });
}

// Runs one step on rings that may be written: updates them and returns the
// output.
at::Tensor run_step(const char* op,
                    const StepArgs& args,
                    const StepShape& s,
                    at::Tensor& spike_ring,
                    at::Tensor& current_ring,
                    at::Tensor& ring_head,
                    const at::Tensor& input,
                    const std::optional<at::Tensor>& injected,
                    const at::Tensor& weight_in,
                    const std::optional<at::Tensor>& bias_in,
                    const std::optional<at::Tensor>& delay_in) {
  const auto dtype = weight_in.scalar_type();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor x = input.to(dtype).contiguous();
  const at::Tensor inj = injected.has_value() && args.kind == kDeltaPlus
                             ? injected->to(dtype).contiguous()
                             : at::Tensor();
  std::optional<at::Tensor> bias;
  if (bias_in.has_value()) {
    bias = bias_in->contiguous();
  }

  const int64_t previous = ring_head.item<int64_t>();
  TORCH_CHECK(previous >= 0 && previous < s.records,
              op,
              ": 'ring_head' must index the ring, in [0, ",
              s.records,
              "), got ",
              previous);
  const int64_t head = (previous + 1) % s.records;

  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(dtype, "delayconv_step_cpu", [&] {
    update_ring<scalar_t>(
        args,
        s,
        x.const_data_ptr<scalar_t>(),
        inj.defined() ? inj.const_data_ptr<scalar_t>() : nullptr,
        spike_ring.data_ptr<bool>(),
        current_ring.data_ptr<scalar_t>(),
        previous,
        head);
    ring_head.fill_(head);

    if (!delay_in.has_value()) {
      out = at::conv2d(latest_current(args, spike_ring, current_ring, head),
                       weight,
                       bias,
                       args.stride,
                       args.padding,
                       args.dilation);
      return;
    }
    const at::Tensor delay = delay_in->contiguous();
    if (all_equal<scalar_t>(delay)) {
      out = shared_delay_conv<scalar_t>(args,
                                        s,
                                        spike_ring,
                                        current_ring,
                                        head,
                                        weight,
                                        bias,
                                        delay.const_data_ptr<scalar_t>()[0]);
      return;
    }

    const TapTable<scalar_t> table =
        build_taps<scalar_t>(args,
                             s,
                             weight.const_data_ptr<scalar_t>(),
                             delay.const_data_ptr<scalar_t>(),
                             head);
    out = at::empty({s.batch, s.filters, s.out_h, s.out_w}, weight.options());
    const scalar_t* bias_data =
        bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr;
    if (args.kind == kDelta) {
      const bool* spikes = spike_ring.const_data_ptr<bool>();
      per_weight_delay_conv<scalar_t, bool>(
          args, s, table, spikes, spikes, bias_data, out.data_ptr<scalar_t>());
    } else {
      const scalar_t* currents = current_ring.const_data_ptr<scalar_t>();
      const int64_t ring_size = current_ring.numel() / current_ring.size(0);
      per_weight_delay_conv<scalar_t, scalar_t>(
          args,
          s,
          table,
          currents,
          currents + (s.recorded > 1 ? ring_size : 0),
          bias_data,
          out.data_ptr<scalar_t>());
    }
  });
  return out;
}

void check_cpu_dtype(const char* op, const at::Tensor& weight) {
  TORCH_CHECK(
      weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
      op,
      ": the CPU kernels compute in float32 or float64, got weights of dtype ",
      weight.scalar_type(),
      "; half precision is not supported on the CPU because it would need a ",
      "float32 copy of the whole ring every step. Convert the layer with ",
      ".float(), or run it on a GPU");
}

at::Tensor step_inplace_cpu(at::Tensor& spike_ring,
                            at::Tensor& current_ring,
                            at::Tensor& ring_head,
                            const at::Tensor& input,
                            const std::optional<at::Tensor>& injected,
                            const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& delay,
                            c10::IntArrayRef stride,
                            c10::IntArrayRef padding,
                            c10::IntArrayRef dilation,
                            int64_t kind,
                            double spike_charge,
                            double tau_a,
                            double tau_b,
                            double step_time,
                            double max_delay,
                            int64_t interp,
                            double tolerance,
                            std::optional<double> current_overbound) {
  const StepArgs args = make_step_args(kStepInPlace,
                                       stride,
                                       padding,
                                       dilation,
                                       kind,
                                       spike_charge,
                                       tau_a,
                                       tau_b,
                                       step_time,
                                       max_delay,
                                       interp,
                                       tolerance,
                                       current_overbound);
  const StepShape s = check_step_tensors(kStepInPlace,
                                         args,
                                         spike_ring,
                                         current_ring,
                                         ring_head,
                                         input,
                                         injected,
                                         weight,
                                         bias,
                                         delay);
  check_cpu_dtype(kStepInPlace, weight);
  TORCH_CHECK(spike_ring.is_contiguous() && current_ring.is_contiguous(),
              kStepInPlace,
              ": the rings are written in place and must be contiguous");
  return run_step(kStepInPlace,
                  args,
                  s,
                  spike_ring,
                  current_ring,
                  ring_head,
                  input,
                  injected,
                  weight,
                  bias,
                  delay);
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(delayconv, CPU, m) {
  m.impl("step_", &cpu::step_inplace_cpu);
}

}  // namespace delayconv

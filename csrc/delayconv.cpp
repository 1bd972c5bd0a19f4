// The extension module delayconv._C and the operator schemas.
//
// Importing delayconv._C loads this library, whose static registrations add
// the operators to torch.ops.delayconv; the module itself holds nothing. Each
// backend registers its kernels at the end of its own file.

#include <Python.h>
#include <torch/library.h>

#include "cpu/taps.h"

extern "C" {
// Python calls this on import; an empty module is all that is needed.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

namespace {

// The CPU kernels' index arithmetic, callable from Python so that the tests
// can check it at sizes no test machine could allocate.
int64_t plane_offset(int64_t newest,
                     int64_t records,
                     int64_t size,
                     int64_t t,
                     int64_t steps,
                     int64_t bc,
                     int64_t area) {
  return delayconv::cpu::Observations{newest, records, size}.plane_offset(
      t, steps, bc, area);
}

}  // namespace

// The synapse model and convolution settings every step operator takes.
#define DELAYCONV_STEP_CONFIG                                       \
  "int[] stride, int[] padding, int[] dilation, int kind, "         \
  "float spike_charge, float tau_a, float tau_b, float step_time, " \
  "float max_delay, int interp, float tolerance, float? current_overbound"

TORCH_LIBRARY(delayconv, m) {
  // One simulation step in place: pushes the input through the synapse model
  // into the ring, then convolves the delayed currents. Returns the output.
  m.def(
      "step_(Tensor(a!) spike_ring, Tensor(b!) current_ring, "
      "Tensor(c!) ring_head, Tensor input, Tensor? injected, Tensor weight, "
      "Tensor? bias, Tensor? delay, " DELAYCONV_STEP_CONFIG ") -> Tensor");

  // T steps without mutation, for autograd. inputs and injected are
  // T x B x C x H x W; returns the outputs (T x B x F x Hout x Wout) and the
  // history of observations, oldest first: the R observations of the ring
  // before the sequence, then the T new ones. spike_history is
  // (R + T) x B x C x H x W, current_history K x (R + T) x B x C x H x W.
  m.def(
      "sequence(Tensor spike_ring, Tensor current_ring, Tensor ring_head, "
      "Tensor inputs, Tensor? injected, Tensor weight, Tensor? bias, "
      "Tensor? delay, " DELAYCONV_STEP_CONFIG ") -> (Tensor, Tensor, Tensor)");

  // Gradients of a sequence from its history: with respect to the inputs,
  // the injected currents, the weight, the bias and the delay. Gradients that
  // output_mask leaves out come back empty.
  m.def(
      "sequence_backward(Tensor grad_outputs, Tensor spike_history, "
      "Tensor current_history, Tensor weight, Tensor? "
      "delay, " DELAYCONV_STEP_CONFIG
      ", bool[5] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // The element offset of a plane of an observation in a ring (records > 0)
  // or a history (records == 0), as the CPU kernels compute it.
  m.def(
      "_plane_offset(int newest, int records, int size, int t, int steps, "
      "int bc, int area) -> int",
      &plane_offset);
}

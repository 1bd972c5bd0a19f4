// The extension module delayconv._C and the operator schemas.
//
// Importing delayconv._C loads this library, whose static registrations add
// the operators to torch.ops.delayconv; the module itself holds nothing. Each
// backend registers its kernels at the end of its own file.

#include <Python.h>
#include <torch/library.h>

extern "C" {
// Python calls this on import; an empty module is all that is needed.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

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

  // The same step without mutation: returns the output and the ring after
  // the step (spikes, currents, head). Differentiable from Python.
  m.def(
      "step(Tensor spike_ring, Tensor current_ring, Tensor ring_head, "
      "Tensor input, Tensor? injected, Tensor weight, Tensor? bias, "
      "Tensor? delay, " DELAYCONV_STEP_CONFIG
      ") -> (Tensor, Tensor, Tensor, Tensor)");

  // Gradients of a step from the ring after it: with respect to the newest
  // observation of each readout ring, the weight, the bias and the delay.
  m.def(
      "step_backward(Tensor grad_out, Tensor spike_ring, Tensor current_ring, "
      "Tensor ring_head, Tensor weight, Tensor? delay, " DELAYCONV_STEP_CONFIG
      ", bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
}

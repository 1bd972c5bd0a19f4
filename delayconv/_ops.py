"""The compiled operators: loading, fake (meta) kernels and autograd.

``torch.ops.delayconv`` holds the operators once ``delayconv._C`` is loaded:

* ``step_``: one step in place (the ring is mutated); no autograd;
* ``sequence``: ``T`` steps without mutation, returning the outputs and the
  history of observations; differentiable through ``sequence_backward``;
* ``sequence_backward``: gradients of a sequence with respect to the inputs,
  the injected currents, the weight, the bias and the delay.

The fake kernels check their arguments in the same words as the C++ checks
(``csrc/step_args.cpp``), so that tracing fails where running would.
"""

from __future__ import annotations

import math

import torch

from .kinds import SynapseKind
from .selection import ring_records

try:
    from . import _C  # noqa: F401  (loading it registers the operators)

    AVAILABLE = True
    LOAD_ERROR: str | None = None
except ImportError as error:  # the package is usable without its kernels
    AVAILABLE = False
    LOAD_ERROR = str(error)

_SCALAR_NAMES = {
    torch.bool: "Bool",
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def _name(dtype: torch.dtype) -> str:
    return _SCALAR_NAMES.get(dtype, str(dtype))


def _num(value: float) -> str:
    """A number as C++ streams print it."""
    return f"{value:g}"


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _check(condition: bool, *parts: object) -> None:
    if not condition:
        raise RuntimeError("".join(str(p) for p in parts))


def recorded(kind: int) -> int:
    """``K``: currents a model records beside its spikes."""
    return {0: 0, 1: 1, 2: 1, 3: 2}[int(kind)]


def check_step_args(
    op: str,
    stride,
    padding,
    dilation,
    kind: int,
    spike_charge: float,
    tau_a: float,
    tau_b: float,
    step_time: float,
    max_delay: float,
    interp: int,
    tolerance: float,
) -> None:
    """Mirror of ``make_step_args`` in ``csrc/step_args.cpp``."""
    _check(
        0 <= kind <= 3,
        op,
        ": 'kind' must be 0 (delta), 1 (delta plus), 2 (single exponential) ",
        "or 3 (double exponential), got ",
        kind,
    )
    _check(
        0 <= interp <= 2,
        op,
        ": 'interp' must be 0 (previous), 1 (nearest) or 2 (linear), got ",
        interp,
    )
    _check(
        math.isfinite(step_time) and step_time > 0,
        op,
        ": 'step_time' must be a positive number of ms, got ",
        _num(step_time),
    )
    _check(
        math.isfinite(max_delay) and max_delay >= 0,
        op,
        ": 'max_delay' must be a non-negative number of ms, got ",
        _num(max_delay),
    )
    _check(
        math.isfinite(tolerance) and tolerance >= 0,
        op,
        ": 'tolerance' must be a non-negative number of ms, got ",
        _num(tolerance),
    )
    _check(
        math.isfinite(spike_charge) and spike_charge != 0,
        op,
        ": 'spike_charge' must be nonzero and finite, got ",
        _num(spike_charge),
    )
    if kind in (SynapseKind.SINGLE_EXPONENTIAL, SynapseKind.DOUBLE_EXPONENTIAL):
        _check(
            math.isfinite(tau_a) and tau_a > 0,
            op,
            ": 'tau_a' (the decay time constant) must be positive, got ",
            _num(tau_a),
        )
    if kind == SynapseKind.DOUBLE_EXPONENTIAL:
        _check(
            0 < tau_b < tau_a,
            op,
            ": 'tau_b' (the rise time constant) must be positive and below ",
            "'tau_a' (",
            _num(tau_a),
            "), got ",
            _num(tau_b),
        )
    for name, value, minimum in (
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        _check(
            len(value) == 2,
            op,
            f": '{name}' must hold 2 values (height, width), got ",
            len(value),
        )
        for v in value:
            _check(
                v >= minimum,
                op,
                f": '{name}' must be at least {minimum}, got ",
                _shape(value),
            )


def _check_shape(op, name, t, expected, meaning) -> None:
    _check(
        tuple(t.shape) == tuple(expected),
        op,
        f": '{name}' must have shape ",
        _shape(expected),
        f" ({meaning}), got ",
        _shape(t.shape),
    )


def _check_device(op, name, t, weight) -> None:
    _check(
        t.device == weight.device,
        op,
        f": '{name}' must be on the weight's device ",
        weight.device,
        ", got ",
        t.device,
    )


def _check_weight(op, weight) -> None:
    _check(
        weight.dim() == 4 and weight.is_floating_point(),
        op,
        ": 'weight' must be a 4-D floating-point tensor (F x C x kH x kW), got ",
        weight.dim(),
        "-D ",
        _name(weight.dtype),
    )


def _check_delay(op, delay, weight) -> None:
    if delay is None:
        return
    _check_shape(op, "delay", delay, weight.shape, "like the weight")
    _check(
        delay.dtype == weight.dtype,
        op,
        ": 'delay' must have the weight's dtype ",
        _name(weight.dtype),
        ", got ",
        _name(delay.dtype),
    )
    _check_device(op, "delay", delay, weight)


def _output_size(op, weight, height, width, stride, padding, dilation):
    """Mirror of ``set_output_size``: the output height and width, after
    checking that the padded input holds the dilated kernel."""
    kh, kw = weight.shape[2:]
    span_h = dilation[0] * (kh - 1) + 1
    span_w = dilation[1] * (kw - 1) + 1
    _check(
        height + 2 * padding[0] >= span_h and width + 2 * padding[1] >= span_w,
        op,
        ": the padded input (",
        height + 2 * padding[0],
        " x ",
        width + 2 * padding[1],
        ") is smaller than the dilated kernel (",
        span_h,
        " x ",
        span_w,
        ")",
    )
    out_h = (height + 2 * padding[0] - span_h) // stride[0] + 1
    out_w = (width + 2 * padding[1] - span_w) // stride[1] + 1
    return out_h, out_w


def check_step_tensors(
    op: str,
    kind: int,
    step_time: float,
    max_delay: float,
    stride,
    padding,
    dilation,
    spike_ring: torch.Tensor,
    current_ring: torch.Tensor,
    ring_head: torch.Tensor,
    input: torch.Tensor | None,
    injected: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delay: torch.Tensor | None,
) -> tuple[int, int]:
    """Mirror of ``check_step_tensors`` in ``csrc/step_args.cpp``; returns the
    output height and width."""
    _check_weight(op, weight)
    _check(
        spike_ring.dim() == 5 and spike_ring.dtype == torch.bool,
        op,
        ": 'spike_ring' must be a 5-D bool tensor (R x B x C x H x W), got ",
        spike_ring.dim(),
        "-D ",
        _name(spike_ring.dtype),
    )
    records, batch, channels, height, width = spike_ring.shape
    needed = ring_records(max_delay, step_time)
    _check(
        records == needed,
        op,
        ": 'spike_ring' holds ",
        records,
        " observations but a maximum delay of ",
        _num(max_delay),
        " ms at steps of ",
        _num(step_time),
        " ms needs ",
        needed,
    )
    _check(
        weight.shape[1] == channels,
        op,
        ": 'weight' has ",
        weight.shape[1],
        " input channels but the ring holds ",
        channels,
    )
    out_h, out_w = _output_size(op, weight, height, width, stride, padding, dilation)
    observation = (batch, channels, height, width)
    _check_shape(
        op,
        "current_ring",
        current_ring,
        (recorded(kind), records, *observation),
        "K x R x B x C x H x W",
    )
    _check(
        current_ring.dtype == weight.dtype,
        op,
        ": 'current_ring' must have the weight's dtype ",
        _name(weight.dtype),
        ", got ",
        _name(current_ring.dtype),
    )
    _check(
        ring_head.dim() == 0 and ring_head.dtype == torch.int64,
        op,
        ": 'ring_head' must be a 0-D int64 tensor, got ",
        ring_head.dim(),
        "-D ",
        _name(ring_head.dtype),
    )
    for name, t in (
        ("spike_ring", spike_ring),
        ("current_ring", current_ring),
        ("ring_head", ring_head),
    ):
        _check_device(op, name, t, weight)
    if input is not None:
        _check_shape(op, "input", input, observation, "B x C x H x W of the ring")
        _check(
            not input.is_complex(),
            op,
            ": 'input' must be bool, integer or floating point, got ",
            _name(input.dtype),
        )
        _check_device(op, "input", input, weight)
    if injected is not None:
        _check_shape(op, "injected", injected, observation, "B x C x H x W")
        _check(
            injected.is_floating_point(),
            op,
            ": 'injected' must be floating point, got ",
            _name(injected.dtype),
        )
        _check_device(op, "injected", injected, weight)
    if bias is not None:
        _check_shape(op, "bias", bias, (weight.shape[0],), "F")
        _check(
            bias.dtype == weight.dtype,
            op,
            ": 'bias' must have the weight's dtype ",
            _name(weight.dtype),
            ", got ",
            _name(bias.dtype),
        )
        _check_device(op, "bias", bias, weight)
    _check_delay(op, delay, weight)
    return out_h, out_w


def check_sequence_inputs(op, spike_ring, inputs, injected, weight) -> int:
    """Mirror of ``check_sequence_inputs`` in ``csrc/step_args.cpp``."""
    _check(
        inputs.dim() == 5,
        op,
        ": 'inputs' must be 5-D (T x B x C x H x W), got ",
        inputs.dim(),
        "-D",
    )
    expected = (inputs.shape[0], *spike_ring.shape[1:])
    _check_shape(op, "inputs", inputs, expected, "T x B x C x H x W of the ring")
    _check(
        not inputs.is_complex(),
        op,
        ": 'inputs' must be bool, integer or floating point, got ",
        _name(inputs.dtype),
    )
    _check_device(op, "inputs", inputs, weight)
    if injected is not None:
        _check_shape(op, "injected", injected, expected, "like the inputs")
        _check(
            injected.is_floating_point(),
            op,
            ": 'injected' must be floating point, got ",
            _name(injected.dtype),
        )
        _check_device(op, "injected", injected, weight)
    return inputs.shape[0]


def _check_all(op, args, sequence: bool = False) -> tuple[int, int]:
    (
        spike_ring,
        current_ring,
        ring_head,
        input,
        injected,
        weight,
        bias,
        delay,
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
        _overbound,
    ) = args
    check_step_args(
        op,
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
    )
    return check_step_tensors(
        op,
        kind,
        step_time,
        max_delay,
        stride,
        padding,
        dilation,
        spike_ring,
        current_ring,
        ring_head,
        None if sequence else input,
        None if sequence else injected,
        weight,
        bias,
        delay,
    )


if AVAILABLE:

    @torch.library.register_fake("delayconv::step_")
    def _step_inplace_fake(*args):
        out_h, out_w = _check_all("delayconv.step_", args)
        spike_ring, weight = args[0], args[5]
        shape = (spike_ring.shape[1], weight.shape[0], out_h, out_w)
        return weight.new_empty(shape)

    @torch.library.register_fake("delayconv::sequence")
    def _sequence_fake(*args):
        op = "delayconv.sequence"
        out_h, out_w = _check_all(op, args, sequence=True)
        spike_ring, current_ring, _, inputs, injected, weight = args[:6]
        steps = check_sequence_inputs(op, spike_ring, inputs, injected, weight)
        records, batch = spike_ring.shape[:2]
        length = records + steps
        outputs = weight.new_empty((steps, batch, weight.shape[0], out_h, out_w))
        spikes = spike_ring.new_empty((length, *spike_ring.shape[1:]))
        currents = current_ring.new_empty(
            (current_ring.shape[0], length, *current_ring.shape[2:])
        )
        return outputs, spikes, currents


def _registered_kernels() -> frozenset[tuple[str, str]]:
    """(operator, device type) pairs this build has kernels for, read once: the
    registrations are fixed once ``_C`` is loaded."""
    if not AVAILABLE:
        return frozenset()
    found = set()
    for op in ("step_", "sequence", "sequence_backward"):
        for device, key in (("cpu", "CPU"), ("cuda", "CUDA")):
            name = f"delayconv::{op}"
            if torch._C._dispatch_has_kernel_for_dispatch_key(name, key):
                found.add((op, device))
    return frozenset(found)


_KERNELS = _registered_kernels()


def has_kernel(device_type: str, op: str = "step_") -> bool:
    """Whether this build registered operator ``op`` for a device type."""
    return (op, device_type) in _KERNELS


def step_config(spec, geometry) -> tuple:
    """The operators' trailing arguments for a synapse model and geometry."""
    return (
        list(geometry.stride),
        list(geometry.padding),
        list(geometry.dilation),
        int(spec.kind),
        spec.spike_charge,
        spec.tau_a,
        spec.tau_b,
        spec.step_time,
        spec.max_delay,
        int(spec.interp),
        spec.tolerance,
        spec.current_overbound,
    )


def check_history(
    op, grad_outputs, spike_history, current_history, weight, delay, config
):
    """Mirror of ``check_history`` in ``csrc/step_args.cpp``; returns T."""
    _check_weight(op, weight)
    _check(
        spike_history.dim() == 5 and spike_history.dtype == torch.bool,
        op,
        ": 'spike_history' must be a 5-D bool tensor ((R + T) x B x C x H x W), ",
        "got ",
        spike_history.dim(),
        "-D ",
        _name(spike_history.dtype),
    )
    stride, padding, dilation, kind = config[:4]
    step_time, max_delay = config[7], config[8]
    records = ring_records(max_delay, step_time)
    steps = spike_history.shape[0] - records
    _, batch, channels, height, width = spike_history.shape
    _check(
        steps >= 0,
        op,
        ": 'spike_history' holds ",
        spike_history.shape[0],
        " observations, fewer than the ",
        records,
        " of the ring before the sequence",
    )
    _check(
        weight.shape[1] == channels,
        op,
        ": 'weight' has ",
        weight.shape[1],
        " input channels but the history holds ",
        channels,
    )
    out_h, out_w = _output_size(op, weight, height, width, stride, padding, dilation)
    shape = (recorded(kind), records + steps, batch, channels, height, width)
    _check_shape(
        op, "current_history", current_history, shape, "K x (R + T) x B x C x H x W"
    )
    _check(
        current_history.dtype == weight.dtype,
        op,
        ": 'current_history' must have the weight's dtype ",
        _name(weight.dtype),
        ", got ",
        _name(current_history.dtype),
    )
    expected = (steps, batch, weight.shape[0], out_h, out_w)
    _check_shape(op, "grad_outputs", grad_outputs, expected, "T x B x F x Hout x Wout")
    _check(
        grad_outputs.dtype == weight.dtype,
        op,
        ": 'grad_outputs' must have the weight's dtype ",
        _name(weight.dtype),
        ", got ",
        _name(grad_outputs.dtype),
    )
    for name, t in (
        ("spike_history", spike_history),
        ("current_history", current_history),
        ("grad_outputs", grad_outputs),
    ):
        _check_device(op, name, t, weight)
    _check_delay(op, delay, weight)
    return steps


def _sequence_setup(ctx, inputs, output) -> None:
    (_, _, _, x, injected, weight, _, delay, *config) = inputs
    _, spike_history, current_history = output
    ctx.save_for_backward(spike_history, current_history, weight, delay)
    ctx.config = config
    ctx.has_injected = injected is not None
    ctx.input_dtypes = (x.dtype, None if injected is None else injected.dtype)


def _sequence_backward(ctx, grad_outputs, _grad_spikes, _grad_currents):
    spike_history, current_history, weight, delay = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[3], needs[4] and ctx.has_injected, needs[5], needs[6], needs[7]]
    grads = torch.ops.delayconv.sequence_backward(
        grad_outputs.to(weight.dtype),
        spike_history,
        current_history,
        weight,
        delay,
        *ctx.config,
        mask,
    )
    grad_x, grad_injected, grad_weight, grad_bias, grad_delay = (
        grad if wanted else None for grad, wanted in zip(grads, mask, strict=True)
    )
    if ctx.config[3] == SynapseKind.DELTA:
        # Spikes are the input's nonzero pattern: no gradient reaches it, as
        # in the reference, where the input's grad stays None.
        grad_x = None
    if grad_x is not None:
        grad_x = grad_x.to(ctx.input_dtypes[0])
    if grad_injected is not None:
        grad_injected = grad_injected.to(ctx.input_dtypes[1])
    return (
        None,
        None,
        None,
        grad_x,
        grad_injected,
        grad_weight,
        grad_bias,
        grad_delay,
        *([None] * len(ctx.config)),
    )


if AVAILABLE:

    @torch.library.register_fake("delayconv::sequence_backward")
    def _sequence_backward_fake(
        grad_outputs, spike_history, current_history, weight, delay, *rest
    ):
        op = "delayconv.sequence_backward"
        config, mask = rest[:-1], rest[-1]
        check_step_args(op, *config[:3], *config[3:11])
        steps = check_history(
            op, grad_outputs, spike_history, current_history, weight, delay, config
        )
        shape = (steps, *spike_history.shape[1:])
        kind = config[3]
        wanted = [
            mask[0],
            mask[1] and kind == SynapseKind.DELTA_PLUS,
            mask[2],
            mask[3],
            mask[4] and delay is not None,
        ]
        shapes = [shape, shape, weight.shape, weight.shape[:1], weight.shape]
        return tuple(
            weight.new_empty(s if w else (0,))
            for s, w in zip(shapes, wanted, strict=True)
        )

    torch.library.register_autograd(
        "delayconv::sequence", _sequence_backward, setup_context=_sequence_setup
    )

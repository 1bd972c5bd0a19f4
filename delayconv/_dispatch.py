"""Chooses how a step runs: the compiled operators or the PyTorch reference."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import torch

from . import _ops, reference
from .geometry import ConvGeometry
from .kinds import Interpolation, SynapseKind
from .synapses import Synapse

BACKENDS = ("auto", "compiled", "reference")
_backend = "auto"
_warned: set[tuple[str, torch.dtype]] = set()


def get_backend() -> str:
    """The backend in force: ``auto``, ``compiled`` or ``reference``."""
    return _backend


def set_backend(name: str) -> None:
    """Selects how :class:`~delayconv.Conv2D` computes a step.

    ``auto`` (the default) uses the compiled operators where they are built for
    the tensors' device and dtype. On the CPU it falls back to the reference,
    with a one-time warning, for dtypes the kernels do not compute in (half
    precision); on a GPU a build without CUDA kernels is an error that says how
    to rebuild, since the reference would be orders of magnitude slower there
    than the user expects. ``compiled`` insists on the operators everywhere;
    ``reference`` always runs the readable pure-PyTorch implementation.
    """
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"'name' must be one of {BACKENDS}, got {name!r}")
    _backend = name


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Runs a block under another backend, restoring the previous one after."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _compiled_reason(weight: torch.Tensor, op: str) -> str | None:
    """Why the compiled operator ``op`` cannot run on ``weight``'s device and
    dtype, or None when it can."""
    if not _ops.AVAILABLE:
        return (
            "delayconv's compiled operators are not built ("
            f"{_ops.LOAD_ERROR}); reinstall with pip install --no-build-isolation ."
        )
    device = weight.device.type
    if not _ops.has_kernel(device, op):
        return (
            f"this build of delayconv has no {device.upper()} kernels; rebuild it "
            "where the CUDA toolkit and a CUDA build of torch are installed, with "
            "FORCE_CUDA=1 pip install --no-build-isolation ."
        )
    if device == "cpu" and weight.dtype not in (torch.float32, torch.float64):
        return (
            f"the CPU kernels compute in float32 or float64, not {weight.dtype}; "
            "convert the layer with .float()"
        )
    return None


def _use_compiled(weight: torch.Tensor, op: str) -> bool:
    if _backend == "reference":
        return False
    reason = _compiled_reason(weight, op)
    if reason is None:
        return True
    if _backend == "compiled" or weight.device.type != "cpu":
        raise RuntimeError(reason)
    key = (weight.device.type, weight.dtype)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"{reason}. Falling back to the pure-PyTorch reference, which is much "
            "slower.",
            stacklevel=_caller_level(),
        )
    return False


def _caller_level() -> int:
    """The stacklevel of the first frame outside delayconv and torch.nn, so that
    a warning points at the user's line, however deep the call came from."""
    package = os.path.dirname(os.path.abspath(__file__))
    modules = os.path.dirname(
        os.path.abspath(torch.nn.Module.__call__.__code__.co_filename)
    )
    frame, level = sys._getframe(1), 1
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith((package, modules)):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def _check_delay_grad(synapse: Synapse, delay: torch.Tensor | None) -> None:
    if delay is None or not (delay.requires_grad and torch.is_grad_enabled()):
        return
    spec = synapse.spec()
    flat = spec.interp in (Interpolation.PREVIOUS, Interpolation.NEAREST)
    if spec.kind in (SynapseKind.DELTA, SynapseKind.DELTA_PLUS) and flat:
        raise ValueError(
            f"the delays require grad, but interp_mode={synapse.interp_mode!r} reads "
            "the ring as a step function of the delay, whose gradient is zero; make "
            "the synapse with interp_mode='linear' to learn delays"
        )


def _commit(synapse: Synapse, spikes, currents, head) -> None:
    with torch.no_grad():
        synapse.spike_ring.copy_(spikes)
        synapse.current_ring.copy_(currents)
        synapse.ring_head.copy_(head)


def sequence(
    synapse: Synapse,
    inputs: torch.Tensor,
    injected: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delay: torch.Tensor | None,
    geometry: ConvGeometry,
) -> torch.Tensor:
    """Runs ``T`` steps (inputs ``T x B x C x H x W``); updates the ring."""
    synapse.match_dtype(weight.dtype)
    _check_delay_grad(synapse, delay)
    spec = synapse.spec()
    if not _use_compiled(weight, "sequence"):
        outputs, spikes, currents, head = reference.sequence(
            spec,
            synapse.spike_ring,
            synapse.current_ring,
            synapse.ring_head,
            inputs,
            injected,
            weight,
            bias,
            delay,
            geometry,
        )
        _commit(synapse, spikes, currents, head)
        return outputs

    if spec.kind != SynapseKind.DELTA_PLUS:
        injected = None
    outputs, spike_history, current_history = torch.ops.delayconv.sequence(
        synapse.spike_ring,
        synapse.current_ring,
        synapse.ring_head,
        inputs,
        injected,
        weight,
        bias,
        delay,
        *_ops.step_config(spec, geometry),
    )

    # The ring after the sequence holds the last R observations of the
    # history, at the slots T single steps would have left them in.
    records, steps = synapse.records, inputs.shape[0]
    head = torch.remainder(synapse.ring_head + steps, records)
    back = torch.remainder(head - torch.arange(records, device=head.device), records)
    newest = records + steps - 1
    _commit(
        synapse,
        spike_history.index_select(0, newest - back),
        current_history.index_select(1, newest - back),
        head,
    )
    return outputs


def step(
    synapse: Synapse,
    inputs: tuple[torch.Tensor, ...],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delay: torch.Tensor | None,
    geometry: ConvGeometry,
) -> torch.Tensor:
    """Runs one step of ``synapse`` and the convolution; updates the ring."""
    synapse.match_dtype(weight.dtype)
    _check_delay_grad(synapse, delay)
    injected = None
    for extra in inputs[1:]:
        injected = extra if injected is None else injected + extra
    tensors = (inputs[0], injected, weight, bias, delay)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors
    )
    if needs_grad:
        # A differentiable step is a sequence of one: the sequence operators
        # keep what the backward pass needs.
        extra = None if injected is None else injected[None]
        outputs = sequence(
            synapse, inputs[0][None], extra, weight, bias, delay, geometry
        )
        return outputs[0]

    if _use_compiled(weight, "step_"):
        spec = synapse.spec()
        config = _ops.step_config(spec, geometry)
        if spec.kind != SynapseKind.DELTA_PLUS:
            injected = None
        return torch.ops.delayconv.step_(
            synapse.spike_ring,
            synapse.current_ring,
            synapse.ring_head,
            inputs[0],
            injected,
            weight,
            bias,
            delay,
            *config,
        )

    out, spikes, currents, head = reference.step(
        synapse.spec(),
        synapse.spike_ring,
        synapse.current_ring,
        synapse.ring_head,
        inputs[0],
        injected,
        weight,
        bias,
        delay,
        geometry,
    )
    _commit(synapse, spikes, currents, head)
    return out

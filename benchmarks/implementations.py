"""The implementations compared on each case, and how each runs one unit.

A *unit* is what one timing sample measures: one step in ``step`` mode, ``T``
steps in ``seq-fwd`` mode, and ``T`` steps plus the backward pass of their sum
in ``seq-fwdbwd`` mode. Every implementation is built inside the worker process
that measures it, from the case's :class:`~benchmarks.inputs.Inputs`.

* ``delayconv``: :class:`delayconv.Conv2D`, compiled step operator in step mode,
  backend ``auto`` in the sequence modes (its compiled sequence kernels where
  the build has them, else the reference).
* ``reference``: the same layer under ``delayconv.backend("reference")``.
* ``delayconv-steps``: ``T`` calls of the step path (sequence modes only).
* ``inferno``: ``inferno.neural.Conv2D`` with the same parameters.
* ``conv2d``: ``torch.nn.functional.conv2d`` of the spikes, the floor.
* ``conv2d+update``: the model's elementwise update in torch, then conv2d.
* ``conv3d``: the delayed layer as a dense conv3d over all delay slots, each
  weight placed at its delay.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cases import MODES, Case
from .inputs import Inputs
from .models import STEP_TIME, TorchSynapse, delayconv_synapse, inferno_synapse

Outputs = tuple[torch.Tensor, torch.Tensor | None]


@dataclass
class Runner:
    """A built implementation, ready to be timed.

    Attributes:
        unit: runs unit ``index`` (step mode: step ``index`` on frame
            ``index``); returns the output and, after a backward pass, the
            weight's gradient.
        reset: returns the layer to rest (empty history).
        backend: which code actually computes: ``compiled``, ``reference`` or
            ``torch``.
        probe: runs a single step when a unit is many steps of a slow
            implementation, so that the budget can be checked before a unit.
        state_bytes: bytes of synaptic state the layer keeps, where known.
    """

    unit: Callable[[int], Outputs]
    reset: Callable[[], None]
    backend: str
    probe: Callable[[], None] | None = None
    state_bytes: int | None = None


@dataclass(frozen=True)
class Implementation:
    """One way of computing a case.

    Attributes:
        name: label in tables, plots and the JSON.
        exact: whether it computes the layer's output exactly on a case (its
            checksum is then compared with the reference's): the floors do
            only where the layer has no delays to ignore.
        build: makes a :class:`Runner` for a case from its inputs.
        unsupported: why the implementation cannot run a case, or None.
        modes: the modes it takes part in at all.
    """

    name: str
    exact: Callable[[Case], bool]
    build: Callable[[Case, Inputs], Runner]
    unsupported: Callable[[Case], str | None]
    modes: tuple[str, ...] = MODES


# ----- delayconv ----------------------------------------------------------


def _delayconv_layer(case: Case, inputs: Inputs):
    import delayconv

    layer = case.layer
    delay_ms = inputs.delay_ms
    conv = delayconv.Conv2D(
        layer.height,
        layer.width,
        layer.channels,
        layer.filters,
        STEP_TIME,
        layer.kernel,
        padding=layer.padding,
        synapse=delayconv_synapse(case.synapse),
        delay=None if layer.max_delay is None else layer.max_delay * STEP_TIME,
        batch_size=inputs.frames.shape[1],
        # The layer checks that its parameters stay on their device, so they
        # are made on the CPU and the whole layer moves afterwards.
        weight_init=lambda _: inputs.weight.detach().cpu().clone(),
        delay_init=lambda d: d if delay_ms is None else delay_ms.cpu().clone(),
    )
    conv = conv.to(case.device)
    conv.weight.requires_grad_(case.backward)
    return conv


def sequence_backend(device: str) -> str:
    """Which code ``Conv2D.forward_sequence`` runs under backend ``auto``."""
    from delayconv import _ops

    return "compiled" if _ops.has_kernel(device, "sequence") else "reference"


def _step_backend(case: Case) -> str:
    # A step that must be differentiated runs as a sequence of one.
    if case.backward:
        return sequence_backend(case.device)
    from delayconv import _ops

    return "compiled" if _ops.has_kernel(case.device, "step_") else "reference"


def _sequence_unit(conv, inputs: Inputs, case: Case, backend: str) -> Callable:
    import delayconv

    frames = inputs.frames

    def unit(index: int) -> Outputs:
        with delayconv.backend(backend):
            if not case.backward:
                with torch.no_grad():
                    return conv.forward_sequence(frames), None
            conv.weight.grad, frames.grad = None, None
            out = conv.forward_sequence(frames)
            out.sum().backward()
            return out, conv.weight.grad

    return unit


def _build_delayconv(case: Case, inputs: Inputs, name: str) -> Runner:
    import delayconv

    conv = _delayconv_layer(case, inputs)
    state = conv.synapse.state_bytes
    if case.sequence:
        if name == "reference":
            chosen, backend = "reference", "reference"
        else:
            chosen, backend = "auto", sequence_backend(case.device)
        unit = _sequence_unit(conv, inputs, case, chosen)
        return Runner(unit, conv.clear, backend, state_bytes=state)

    # The step mode insists on the compiled operator rather than falling back.
    chosen = "reference" if name == "reference" else "compiled"

    def step(index: int) -> Outputs:
        with delayconv.backend(chosen), torch.no_grad():
            return conv(inputs.frame(index)), None

    return Runner(step, conv.clear, chosen, state_bytes=state)


def _build_steps(case: Case, inputs: Inputs) -> Runner:
    conv = _delayconv_layer(case, inputs)
    frames = inputs.frames
    grad = torch.enable_grad if case.backward else torch.no_grad

    def unit(index: int) -> Outputs:
        if case.backward:
            conv.weight.grad, frames.grad = None, None
        with grad():
            out = torch.stack([conv(frames[t]) for t in range(len(frames))])
        if not case.backward:
            return out, None
        out.sum().backward()
        return out, conv.weight.grad

    return Runner(
        unit, conv.clear, _step_backend(case), state_bytes=conv.synapse.state_bytes
    )


def _steps_unsupported(case: Case) -> str | None:
    # Without gradients each call runs the compiled step operator.
    if case.backward:
        return None
    return _needs_compiled_step(dataclasses.replace(case, mode="step"))


def _needs_compiled_step(case: Case) -> str | None:
    from delayconv import _ops

    if case.sequence or _ops.has_kernel(case.device, "step_"):
        return None
    return f"this build of delayconv has no compiled step operator for {case.device}"


# ----- inferno ------------------------------------------------------------


def _build_inferno(case: Case, inputs: Inputs) -> Runner:
    import inferno.neural

    layer = case.layer
    delay_ms = inputs.delay_ms
    conv = inferno.neural.Conv2D(
        layer.height,
        layer.width,
        layer.channels,
        layer.filters,
        STEP_TIME,
        layer.kernel,
        padding=layer.padding,
        synapse=inferno_synapse(case.synapse),
        delay=None if layer.max_delay is None else layer.max_delay * STEP_TIME,
        batch_size=inputs.frames.shape[1],
        weight_init=lambda _: inputs.weight.detach().cpu().clone(),
        delay_init=lambda d: d if delay_ms is None else delay_ms.cpu().clone(),
    ).to(case.device)
    frames = inputs.frames

    if not case.sequence:

        def step(index: int) -> Outputs:
            with torch.no_grad():
                return conv(inputs.frame(index)), None

        return Runner(step, conv.clear, "inferno")

    def unit(index: int) -> Outputs:
        with torch.no_grad():
            return torch.stack([conv(frames[t]) for t in range(len(frames))]), None

    def probe() -> None:
        with torch.no_grad():
            conv(frames[0])

    return Runner(unit, conv.clear, "inferno", probe=probe)


def _inferno_unsupported(case: Case) -> str | None:
    if importlib.util.find_spec("inferno") is None:
        return "inferno-ai is not installed"
    if case.backward:
        return "inferno is compared forward only (modes step and seq-fwd)"
    return None


def inferno_bytes(case: Case) -> int:
    """Estimated peak memory of an inferno step, from its largest tensors.

    With delays, inferno reads its history through a ``B x N x L x F`` selector
    (``N = C k k``, ``L = Hout Wout``); its peak was measured at about 66 bytes
    per element of that shape (gather indices, the gathered currents and their
    product with the weights). Without delays it holds ``B x N x L`` unfolded
    copies of the input, a few floats each.
    """
    layer = case.layer
    unfolded = (
        layer.batch
        * layer.channels
        * layer.kernel**2
        * layer.out_height
        * layer.out_width
    )
    if layer.max_delay:
        return 66 * unfolded * layer.filters
    return 16 * unfolded * layer.records


# ----- dense torch formulations -------------------------------------------


def _build_conv2d(case: Case, inputs: Inputs, update: bool) -> Runner:
    padding = case.layer.padding
    weight = inputs.weight.detach().clone().requires_grad_(case.backward)
    frames = inputs.frames
    synapse = TorchSynapse.zeros(case.synapse, frames[0])

    def convolve(current: torch.Tensor) -> torch.Tensor:
        return F.conv2d(current, weight, None, padding=padding)

    if not case.sequence:

        def step(index: int) -> Outputs:
            with torch.no_grad():
                spikes = inputs.frame(index)
                return convolve(synapse.step(spikes) if update else spikes), None

        return Runner(step, synapse.clear, "torch")

    def unit(index: int) -> Outputs:
        weight.grad, frames.grad = None, None
        synapse.state = [s.detach() for s in synapse.state]
        with torch.set_grad_enabled(case.backward):
            current = frames
            if update:
                current = torch.stack([synapse.step(x) for x in frames])
            out = convolve(current.flatten(0, 1)).unflatten(0, frames.shape[:2])
        if not case.backward:
            return out, None
        out.sum().backward()
        return out, weight.grad

    return Runner(unit, synapse.clear, "torch")


def spread_weight(weight: torch.Tensor, delay_steps: torch.Tensor | None, records):
    """The conv3d kernel ``F x C x R x k x k``: each weight at its delay slot.

    conv3d correlates, so depth index ``R - 1 - d`` meets the input ``d`` steps
    before the output's own step.
    """
    if delay_steps is None:
        return weight.unsqueeze(2)
    slot = (records - 1 - delay_steps).unsqueeze(2)
    empty = weight.new_zeros((*weight.shape[:2], records, *weight.shape[2:]))
    return empty.scatter(2, slot, weight.unsqueeze(2))


def _build_conv3d(case: Case, inputs: Inputs) -> Runner:
    records = case.layer.records
    padding = (0, case.layer.padding, case.layer.padding)
    weight = inputs.weight.detach().clone().requires_grad_(case.backward)
    delays = inputs.delay_steps
    frames = inputs.frames
    synapse = TorchSynapse.zeros(case.synapse, frames[0])

    if not case.sequence:
        return _conv3d_steps(case, inputs, synapse, padding)

    def unit(index: int) -> Outputs:
        weight.grad, frames.grad = None, None
        synapse.state = [s.detach() for s in synapse.state]
        with torch.set_grad_enabled(case.backward):
            current = torch.stack([synapse.step(x) for x in frames])
            # T x B x C x H x W as B x C x T x H x W, with R - 1 empty steps of
            # history before the first (causal padding in time).
            volume = F.pad(current.permute(1, 2, 0, 3, 4), (0, 0, 0, 0, records - 1, 0))
            kernel = spread_weight(weight, delays, records)
            out = F.conv3d(volume, kernel, None, padding=padding)
            out = out.permute(2, 0, 1, 3, 4)
        if not case.backward:
            return out, None
        out.sum().backward()
        return out, weight.grad

    return Runner(unit, synapse.clear, "torch")


def _conv3d_steps(case: Case, inputs: Inputs, synapse, padding) -> Runner:
    layer = case.layer
    records = layer.records
    first = inputs.frames[0]
    ring = first.new_zeros((first.shape[0], first.shape[1], records, *first.shape[2:]))
    # One kernel per position of the newest slot, so that the ring is never
    # rotated: kernel h holds delay d at slot (h - d) mod R.
    base = spread_weight(inputs.weight.detach(), inputs.delay_steps, records)
    kernels = [torch.roll(base, shifts=h + 1, dims=2) for h in range(records)]
    head = [records - 1]

    def step(index: int) -> Outputs:
        with torch.no_grad():
            head[0] = (head[0] + 1) % records
            ring[:, :, head[0]] = synapse.step(inputs.frame(index))
            out = F.conv3d(ring, kernels[head[0]], None, padding=padding)
        return out.squeeze(2), None

    def reset() -> None:
        synapse.clear()
        ring.zero_()
        head[0] = records - 1

    return Runner(step, reset, "torch")


# ----- the registry -------------------------------------------------------


def _always(case: Case) -> str | None:
    return None


def _exact(case: Case) -> bool:
    return True


def _undelayed(case: Case) -> bool:
    return not case.layer.max_delay


def _undelayed_delta(case: Case) -> bool:
    # Q / dt = 1 makes a delta synapse's current equal to its spikes.
    return _undelayed(case) and case.synapse in ("delta", "delta-plus")


IMPLEMENTATIONS = {
    impl.name: impl
    for impl in (
        Implementation(
            "delayconv",
            _exact,
            lambda c, i: _build_delayconv(c, i, "delayconv"),
            _needs_compiled_step,
        ),
        Implementation(
            "reference",
            _exact,
            lambda c, i: _build_delayconv(c, i, "reference"),
            _always,
        ),
        Implementation(
            "delayconv-steps",
            _exact,
            _build_steps,
            _steps_unsupported,
            modes=("seq-fwd", "seq-fwdbwd"),
        ),
        Implementation("inferno", _exact, _build_inferno, _inferno_unsupported),
        Implementation(
            "conv2d", _undelayed_delta, lambda c, i: _build_conv2d(c, i, False), _always
        ),
        Implementation(
            "conv2d+update", _undelayed, lambda c, i: _build_conv2d(c, i, True), _always
        ),
        Implementation("conv3d", _exact, _build_conv3d, _always),
    )
}
FLOOR = "conv2d"
ORACLE = "reference"

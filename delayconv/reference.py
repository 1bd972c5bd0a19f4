"""The pure-PyTorch statement of delayconv's maths: the oracle of the kernels.

Everything here is written for clarity, not speed, from ordinary differentiable
PyTorch operations. The compiled operators must agree with it, and the tests
hold them to it. The functions take the same arguments as the operators do.

A delayed current is a weighted sum of at most two observations of each ring
the model reads ("taps"): the older and the newer neighbour of the sample time.
The weights of the taps depend only on the delay, so a convolution over delayed
currents is a convolution over all ``R`` ring slots stacked as channels, with
each weight spread over the slots its delay reads. That is how
:func:`delayed_conv2d` computes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import ConvGeometry
from .kinds import Interpolation, SynapseKind
from .selection import Located, gather_back, locate, ring_records


@dataclass(frozen=True)
class SynapseSpec:
    """Everything the maths needs to know about a synapse model.

    ``tau_a`` and ``tau_b`` are the model's time constants in ms: the single
    time constant, or the decay and rise constants of the double exponential;
    unused ones are 0.
    """

    kind: SynapseKind
    spike_charge: float
    tau_a: float
    tau_b: float
    step_time: float
    max_delay: float
    interp: Interpolation
    tolerance: float
    current_overbound: float | None

    @property
    def records(self) -> int:
        return ring_records(self.max_delay, self.step_time)

    @property
    def recorded(self) -> int:
        """``K``: how many currents the model records beside its spikes."""
        return {0: 0, 1: 1, 2: 1, 3: 2}[int(self.kind)]

    @property
    def readouts(self) -> int:
        """How many rings a delayed current is read from (see
        :func:`readout_rings`)."""
        return 2 if self.kind == SynapseKind.DOUBLE_EXPONENTIAL else 1


def update(
    spec: SynapseSpec,
    previous: torch.Tensor,
    inputs: torch.Tensor,
    injected: torch.Tensor | None,
) -> torch.Tensor:
    """One step of the synapse dynamics.

    Args:
        spec: the synapse model.
        previous: ``K x B x *S`` recorded currents of the previous step.
        inputs: ``B x *S`` input, already in the current dtype.
        injected: ``B x *S`` injected current (``DELTA_PLUS`` only), or None.

    Returns:
        ``K x B x *S`` recorded currents of this step.
    """
    dt = spec.step_time
    if spec.kind == SynapseKind.DELTA:
        return previous[:0]
    if spec.kind == SynapseKind.DELTA_PLUS:
        current = inputs * (spec.spike_charge / dt)
        if injected is not None:
            current = current + injected
        return current.unsqueeze(0)
    if spec.kind == SynapseKind.SINGLE_EXPONENTIAL:
        tau = spec.tau_a
        return previous * math.exp(-dt / tau) + (spec.spike_charge / tau) * inputs
    jump = (spec.spike_charge / (spec.tau_a - spec.tau_b)) * inputs
    pos = previous[0] * math.exp(-dt / spec.tau_a) + jump
    neg = previous[1] * math.exp(-dt / spec.tau_b) + jump
    return torch.stack((pos, neg))


def readout_rings(
    spec: SynapseSpec, spike_ring: torch.Tensor, current_ring: torch.Tensor
) -> list[torch.Tensor]:
    """The rings (``R x B x *S``) a delayed current is read from.

    A delta synapse reads its spikes, scaled by ``Q / dt``; the others read
    their recorded currents, the double exponential both of them.
    """
    if spec.kind == SynapseKind.DELTA:
        return [spike_ring.to(current_ring.dtype)]
    return list(current_ring.unbind(0))


def tap_coefficients(
    spec: SynapseSpec, located: Located
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Weights of the older and newer observation, one pair per readout ring.

    The delayed current is ``sum_r older_coef[r] * ring_r[older] +
    newer_coef[r] * ring_r[newer]``; for an exact read only the older weight
    counts (``older == newer``).
    """
    s = located.since_older
    exact = located.exact
    one = torch.ones_like(s)
    zero = torch.zeros_like(s)
    dt = spec.step_time

    if spec.kind in (SynapseKind.DELTA, SynapseKind.DELTA_PLUS):
        if spec.interp == Interpolation.PREVIOUS:
            older, newer = one, zero
        elif spec.interp == Interpolation.NEAREST:
            take_newer = (s / dt > 0.5) & ~exact
            older, newer = (~take_newer).to(s.dtype), take_newer.to(s.dtype)
        else:
            fraction = torch.where(exact, zero, s / dt)
            older, newer = 1 - fraction, fraction
        if spec.kind == SynapseKind.DELTA:
            scale = spec.spike_charge / dt
            older, newer = older * scale, newer * scale
        return [(older, newer)]

    taus = (
        (spec.tau_a,)
        if spec.kind == SynapseKind.SINGLE_EXPONENTIAL
        else (
            spec.tau_a,
            spec.tau_b,
        )
    )
    pairs = []
    for index, tau in enumerate(taus):
        decay = torch.where(exact, one, torch.exp(-s / tau))
        sign = 1.0 if index == 0 else -1.0
        pairs.append((sign * decay, zero))
    return pairs


def gradient_taps(
    spec: SynapseSpec, delay: torch.Tensor, records: int
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Zero-valued taps that carry the gradient of a delayed read to the delay.

    The forward value of a delayed read is piecewise smooth, and flat where a
    delay snaps onto an observation. Its gradient is defined instead as that of
    the interpolation formula on the step interval ``[k, k + 1]`` (in steps
    back) that holds the delay: the right derivative at an observation, the
    left one at the maximum delay, and zero outside ``[0, max_delay]``, where
    the delay is clamped. Linear interpolation differentiates as
    ``(ring[k + 1] - ring[k]) / dt``, exponential decay as
    ``ring[k + 1] exp(-s / tau) / tau`` with ``s`` the time from the older
    observation. ``previous`` and ``nearest`` are flat and have no gradient.

    Returns, per readout ring, ``(steps, coefficient)`` pairs whose
    coefficients are exactly zero but whose derivative is the one above.
    """
    if records < 2:
        return [[] for _ in range(spec.readouts)]
    dt = spec.step_time
    newer = (delay.detach() / dt).floor().clamp(0, records - 2).long()
    older = newer + 1
    inside = ((delay >= 0) & (delay <= spec.max_delay)).to(delay.dtype)
    s = (older.to(delay.dtype) * dt - delay) * inside

    if spec.kind in (SynapseKind.DELTA, SynapseKind.DELTA_PLUS):
        scale = spec.spike_charge / dt if spec.kind == SynapseKind.DELTA else 1.0
        fraction = s / dt
        pairs = [(scale * (1 - fraction) * inside, scale * fraction * inside)]
    else:
        taus = (
            [spec.tau_a]
            if spec.kind == SynapseKind.SINGLE_EXPONENTIAL
            else [
                spec.tau_a,
                spec.tau_b,
            ]
        )
        pairs = [
            ((1.0 if index == 0 else -1.0) * torch.exp(-s / tau) * inside, None)
            for index, tau in enumerate(taus)
        ]
    return [
        [(older, g_older - g_older.detach())]
        + ([] if g_newer is None else [(newer, g_newer - g_newer.detach())])
        for g_older, g_newer in pairs
    ]


def read_current(
    spec: SynapseSpec,
    rings: list[torch.Tensor],
    head: torch.Tensor,
    selector: torch.Tensor,
) -> torch.Tensor:
    """The synaptic current ``selector`` ms ago, from readout rings of any shape.

    Args:
        spec: the synapse model.
        rings: readout rings, each ``R x *E``.
        head: 0-d slot of the newest observation.
        selector: delays in ms, shaped ``*E`` or ``*E x D``.
    """
    located = locate(
        selector, spec.step_time, spec.max_delay, len(rings[0]), spec.tolerance
    )
    value = None
    for ring, (older_coef, newer_coef) in zip(
        rings, tap_coefficients(spec, located), strict=True
    ):
        term = older_coef * gather_back(ring, head, located.older)
        term = term + newer_coef * gather_back(ring, head, located.newer)
        value = term if value is None else value + term
    if spec.current_overbound is not None:
        value = torch.where(located.inbound, value, spec.current_overbound)
    return value


def latest_current(
    spec: SynapseSpec,
    spike_ring: torch.Tensor,
    current_ring: torch.Tensor,
    head: torch.Tensor,
) -> torch.Tensor:
    """The newest synaptic current, ``B x *S``."""
    rings = readout_rings(spec, spike_ring, current_ring)
    latest = [ring.index_select(0, head.view(1)).squeeze(0) for ring in rings]
    if spec.kind == SynapseKind.DELTA:
        return latest[0] * (spec.spike_charge / spec.step_time)
    if spec.kind == SynapseKind.DOUBLE_EXPONENTIAL:
        return latest[0] - latest[1]
    return latest[0]


def delayed_conv2d(
    spec: SynapseSpec,
    spike_ring: torch.Tensor,
    current_ring: torch.Tensor,
    head: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delay: torch.Tensor | None,
    geometry: ConvGeometry,
) -> torch.Tensor:
    """Convolution of the delayed synaptic currents: ``B x F x Hout x Wout``.

    Every weight ``W[f, c, i, j]`` reads the current of its input pixel as it was
    ``delay[f, c, i, j]`` ms ago; without ``delay`` every weight reads the newest
    current. Positions in the padding hold no input: they read zero, or the
    overbound value where a delay lies beyond the maximum.
    """
    conv = {
        "stride": geometry.stride,
        "padding": geometry.padding,
        "dilation": geometry.dilation,
    }
    if delay is None:
        current = latest_current(spec, spike_ring, current_ring, head)
        return F.conv2d(current, weight, bias, **conv)

    records = spike_ring.shape[0]
    located = locate(
        delay.detach(), spec.step_time, spec.max_delay, records, spec.tolerance
    )
    rings = readout_rings(spec, spike_ring, current_ring)
    back = torch.remainder(head - torch.arange(records, device=head.device), records)
    taps = [
        [(located.older, older), (located.newer, newer)]
        for older, newer in tap_coefficients(spec, located)
    ]
    if spec.current_overbound is not None:
        taps = [
            [(steps, torch.where(located.inbound, coef, 0.0)) for steps, coef in pair]
            for pair in taps
        ]
    if delay.requires_grad:
        for ring_taps, extra in zip(
            taps, gradient_taps(spec, delay, records), strict=True
        ):
            ring_taps.extend(extra)

    out = None
    for ring, ring_taps in zip(rings, taps, strict=True):
        spread = torch.zeros(
            (records, *weight.shape), dtype=weight.dtype, device=weight.device
        )
        for steps, coef in ring_taps:
            spread = spread.scatter_add(0, steps.unsqueeze(0), (weight * coef)[None])
        stacked_weight = spread.transpose(0, 1).flatten(1, 2)
        stacked_input = ring.index_select(0, back).transpose(0, 1).flatten(1, 2)
        term = F.conv2d(stacked_input, stacked_weight, None, **conv)
        out = term if out is None else out + term

    if spec.current_overbound is not None and spec.current_overbound != 0.0:
        outside = torch.where(located.inbound, 0.0, weight * spec.current_overbound)
        out = out + outside.sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def step(
    spec: SynapseSpec,
    spike_ring: torch.Tensor,
    current_ring: torch.Tensor,
    head: torch.Tensor,
    inputs: torch.Tensor,
    injected: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delay: torch.Tensor | None,
    geometry: ConvGeometry,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One simulation step, without touching its arguments.

    Returns the output and the ring after the step (spikes, currents, head);
    the output is differentiable with respect to ``inputs``, ``injected``,
    ``weight``, ``bias`` and ``delay``, the older observations being constants.
    """
    dtype = current_ring.dtype
    previous = current_ring.index_select(1, head.view(1)).squeeze(1)
    currents = update(spec, previous, inputs.to(dtype), injected)
    new_head = torch.remainder(head + 1, spike_ring.shape[0])
    slot = new_head.view(1)
    spike_ring = spike_ring.index_copy(0, slot, (inputs != 0).unsqueeze(0))
    current_ring = current_ring.index_copy(1, slot, currents.unsqueeze(1))
    out = delayed_conv2d(
        spec, spike_ring, current_ring, new_head, weight, bias, delay, geometry
    )
    return out, spike_ring, current_ring, new_head


def sequence(
    spec: SynapseSpec,
    spike_ring: torch.Tensor,
    current_ring: torch.Tensor,
    head: torch.Tensor,
    inputs: torch.Tensor,
    injected: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    delay: torch.Tensor | None,
    geometry: ConvGeometry,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``T`` steps (inputs ``T x B x C x H x W``), as :func:`step` in a loop.

    Returns the outputs ``T x B x F x Hout x Wout`` and the ring after the last
    step; everything is differentiable through the ring, across steps.
    """
    outputs = []
    for t in range(inputs.shape[0]):
        out, spike_ring, current_ring, head = step(
            spec,
            spike_ring,
            current_ring,
            head,
            inputs[t],
            None if injected is None else injected[t],
            weight,
            bias,
            delay,
            geometry,
        )
        outputs.append(out)
    if outputs:
        stacked = torch.stack(outputs)
    else:
        batch = inputs.shape[1]
        shape = (0, batch, weight.shape[0], geometry.out_height, geometry.out_width)
        stacked = weight.new_zeros(shape)
    return stacked, spike_ring, current_ring, head

"""Reading a ring of past observations at a delay, in plain PyTorch.

A ring holds the last ``R`` observations of a quantity; slot ``head`` holds the
newest, slot ``(head - k) mod R`` the one ``k`` steps back. A delay of ``t`` ms
reads between the observations ``floor(t / dt)`` and ``ceil(t / dt)`` steps back.
The arithmetic follows the reference library operation by operation, in the
selector's dtype, so that which observation a delay lands on agrees exactly.

This module is the readable statement of the rules; the compiled kernels apply
the same rules in ``csrc/selection.h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

INTERPOLATIONS = ("previous", "nearest", "linear")


def ring_records(max_delay: float, step_time: float) -> int:
    """``R``: observations a ring keeps to reach ``max_delay`` ms back."""
    return max(math.ceil(max_delay / step_time) + 1, 1)


@dataclass(frozen=True)
class Located:
    """Where each selector lands in the ring.

    Attributes:
        older: steps back of the observation at or before the sample time.
        newer: steps back of the observation at or after it (``older - 1``, or
            ``older`` when the selector falls on an observation).
        since_older: ms from the older observation to the sample time, ``s``.
        inbound: whether the selector lies within tolerance of ``[0, max_delay]``.
    """

    older: torch.Tensor
    newer: torch.Tensor
    since_older: torch.Tensor
    inbound: torch.Tensor

    @property
    def exact(self) -> torch.Tensor:
        return self.older == self.newer


def locate(
    selector: torch.Tensor,
    step_time: float,
    max_delay: float,
    records: int,
    tolerance: float,
) -> Located:
    """Finds the observations that a selector (in ms) reads between."""
    if records == 1:
        zero = torch.zeros_like(selector)
        steps = torch.zeros(selector.shape, dtype=torch.long, device=selector.device)
        inbound = selector.abs() <= tolerance
        return Located(steps, steps, zero, inbound)

    bounded = selector.clamp(min=0, max=max_delay)
    shift = bounded / step_time
    rounded = shift.round()
    shift = torch.where(
        torch.abs(step_time * rounded - bounded) <= tolerance, rounded, shift
    )
    older = shift.ceil().long()
    newer = shift.floor().long()
    since_older = step_time - step_time * (shift % 1)
    inbound = (selector - bounded).abs() <= tolerance
    return Located(older, newer, since_older, inbound)


def interpolate(
    older: torch.Tensor,
    newer: torch.Tensor,
    located: Located,
    mode: str,
    step_time: float,
    time_constant: float | None = None,
) -> torch.Tensor:
    """Combines the two neighbouring observations at the sample time.

    ``mode`` is ``previous``, ``nearest`` or ``linear``; with a
    ``time_constant``, the older observation decays exponentially instead, as
    an exponentially decaying current does between steps.
    """
    s = located.since_older
    if time_constant is not None:
        value = older * torch.exp(-s / time_constant)
    elif mode == "previous":
        value = older
    elif mode == "nearest":
        value = torch.where(s / step_time > 0.5, newer, older)
    elif mode == "linear":
        value = older + (newer - older) * (s / step_time)
    else:
        raise ValueError(f"unknown interpolation mode {mode!r}")
    return torch.where(located.exact, older, value)


def gather_back(
    ring: torch.Tensor, head: torch.Tensor, steps: torch.Tensor
) -> torch.Tensor:
    """Reads ``ring`` (``R x S``) at ``steps`` back from ``head``, per element.

    ``steps`` has shape ``S``, or ``S x D`` for ``D`` reads per element; the
    result has the shape of ``steps``.
    """
    records = ring.shape[0]
    slots = torch.remainder(head - steps, records)
    if slots.dim() == ring.dim() - 1:
        return torch.gather(ring, 0, slots.unsqueeze(0)).squeeze(0)
    moved = slots.movedim(-1, 0)
    return torch.gather(ring, 0, moved).movedim(0, -1)


def check_selector(selector: torch.Tensor, observation_shape: tuple[int, ...]) -> None:
    """Raises unless ``selector`` is shaped like an observation, plus an optional
    trailing dimension of several selectors."""
    if not isinstance(selector, torch.Tensor):
        raise TypeError(
            f"'selector' must be a torch.Tensor, got {type(selector).__name__}"
        )
    if not selector.is_floating_point():
        raise TypeError(
            f"'selector' must hold delays in ms as floats, got {selector.dtype}"
        )
    shape = tuple(selector.shape)
    if shape != observation_shape and shape[:-1] != observation_shape:
        raise ValueError(
            f"'selector' must have shape {observation_shape} or {observation_shape} "
            f"plus a trailing dimension of selectors, got {shape}"
        )

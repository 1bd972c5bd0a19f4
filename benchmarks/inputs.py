"""The data every implementation of a case receives, made from the case's seed.

All implementations of a case run in separate processes; they agree on their
inputs because each process draws them from the same seeded generator on the
CPU and only then moves them to the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cases import Case
from .models import STEP_TIME

# Distinct input frames a step-mode run cycles through; enough that no delay
# slot reads the same frame as its neighbour.
STEP_FRAMES = 8


@dataclass
class Inputs:
    """Spikes, weights and delays of one case.

    Attributes:
        frames: float32 spikes (0 or 1), ``P x B x C x H x W`` in step mode
            (frame ``i % P`` feeds step ``i``) and ``T x B x C x H x W`` in the
            sequence modes.
        weight: ``F x C x k x k``, uniform on [0, 1) as inferno initializes it.
        delay_steps: ``F x C x k x k`` int64 delays in whole steps, uniform on
            ``{0, ..., max_delay}``, or None for a layer without delays.
    """

    frames: torch.Tensor
    weight: torch.Tensor
    delay_steps: torch.Tensor | None

    @property
    def delay_ms(self) -> torch.Tensor | None:
        """The delays in ms, in the weight dtype, as the layers take them."""
        if self.delay_steps is None:
            return None
        return self.delay_steps.to(self.weight.dtype) * STEP_TIME

    def frame(self, index: int) -> torch.Tensor:
        """The input of step ``index`` in step mode."""
        return self.frames[index % len(self.frames)]


def make_inputs(case: Case, *, batch: int | None = None, steps: int | None = None):
    """Draws the inputs of ``case``, optionally with a smaller batch or ``T``.

    Whole-step delays keep every formulation exact: a delay on an observation
    reads it without interpolation, so the dense ``conv3d`` computes the same
    numbers as the delayed layers.
    """
    layer = case.layer
    generator = torch.Generator().manual_seed(case.seed)
    count = (steps or case.steps) if case.sequence else STEP_FRAMES
    shape = (count, batch or layer.batch, layer.channels, layer.height, layer.width)
    frames = (torch.rand(shape, generator=generator) < case.density).float()
    kernel = (layer.filters, layer.channels, layer.kernel, layer.kernel)
    weight = torch.rand(kernel, generator=generator)
    delay = None
    if layer.max_delay is not None:
        delay = torch.randint(0, layer.max_delay + 1, kernel, generator=generator)
    device = torch.device(case.device)
    return Inputs(
        frames.to(device),
        weight.to(device),
        None if delay is None else delay.to(device),
    )

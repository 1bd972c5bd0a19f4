"""The demo's network: a delayed convolution, LIF neurons, a pooled readout.

Shapes: ``T`` steps, ``B`` batch, ``F`` filters, ``S x S`` frame, ``K`` classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from ..conv import Conv2D
from ..synapses import DeltaCurrent


class SpikeFunction(torch.autograd.Function):
    """Heaviside step forward, fast-sigmoid derivative backward.

    The step has no useful derivative, so the backward pass takes that of
    ``x / (1 + slope |x|)`` instead (Zenke and Ganguli's SuperSpike surrogate).
    """

    @staticmethod
    def forward(ctx, distance: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(distance)
        ctx.slope = slope
        return (distance >= 0).to(distance.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (distance,) = ctx.saved_tensors
        return grad / (1 + ctx.slope * distance.abs()) ** 2, None


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons driven by a sequence of currents.

    ``v <- v exp(-dt / tau) + I``; a neuron spikes when ``v`` reaches the
    threshold, which is then subtracted from ``v``. The neurons start at rest
    on every call, so the module keeps no state between sequences.

    Args:
        time_constant: membrane time constant ``tau``, in ms.
        step_time: simulation step ``dt``, in ms.
        threshold: firing threshold, in the units of the input current.
        slope: steepness of the surrogate derivative, per unit of current.
    """

    def __init__(
        self,
        time_constant: float,
        step_time: float,
        threshold: float = 1.0,
        slope: float = 5.0,
    ):
        super().__init__()
        self.decay = math.exp(-step_time / time_constant)
        self.threshold = threshold
        self.slope = slope

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        """Integrates ``current`` (``T x B x ...``) into spikes of the same shape,
        0.0 or 1.0."""
        voltage = torch.zeros_like(current[0])
        spikes = []
        for step_current in current:
            voltage = self.decay * voltage + step_current
            spike = SpikeFunction.apply(voltage - self.threshold, self.slope)

            # The reset is kept out of the gradient: differentiating through it
            # mostly adds noise to the surrogate (Zenke and Vogels, 2021).
            voltage = voltage - spike.detach() * self.threshold
            spikes.append(spike)
        return torch.stack(spikes)


class MotionNet(nn.Module):
    """Delayed ``Conv2D`` -> LIF -> spikes pooled over space and time -> linear.

    The pooling makes the readout blind to where and when a filter fired, so
    the network can only tell motions apart by filters that respond to motion.

    Args:
        size: frame height and width ``S``, in pixels.
        classes: number of classes ``K``.
        filters: convolution filters ``F``.
        kernel: convolution kernel size, in pixels (odd; the frame keeps its
            size through ``kernel // 2`` padding).
        max_delay: largest delay a weight may take, in ms.
        step_time: simulation step, in ms.
        membrane_tau: LIF membrane time constant, in ms.
        delay_init: maps the default (zero) delays ``F x 1 x k x k`` to the
            initial ones, in ms.
    """

    def __init__(
        self,
        size: int,
        classes: int,
        *,
        filters: int = 8,
        kernel: int = 5,
        max_delay: float = 4.0,
        step_time: float = 1.0,
        membrane_tau: float = 1.0,
        delay_init: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        # Linear interpolation makes a delayed read differentiable in the delay;
        # the default "previous" would read a step function of it.
        synapse = DeltaCurrent.partialconstructor(1.0, interp_mode="linear")
        fan_in = kernel * kernel
        self.conv = Conv2D(
            size,
            size,
            1,
            filters,
            step_time,
            kernel,
            padding=kernel // 2,
            synapse=synapse,
            delay=max_delay,
            weight_init=lambda w: torch.randn_like(w) * (2.0 / math.sqrt(fan_in)),
            delay_init=delay_init,
        )
        self.lif = LIF(membrane_tau, step_time)
        self.readout = nn.Linear(filters, classes)

    def forward(self, movies: torch.Tensor) -> torch.Tensor:
        """Classifies a batch of movies.

        Args:
            movies: ``T x B x 1 x S x S`` spikes (bool or float).

        Returns:
            ``B x K`` logits.
        """
        # Every sample starts from silent synapses. Setting a new batch size
        # reallocates the ring, so it is only done when the size changes.
        if self.conv.batchsz != movies.shape[1]:
            self.conv.batchsz = movies.shape[1]
        self.conv.clear()

        current = self.conv.forward_sequence(movies)
        spikes = self.lif(current)
        rate = spikes.sum(dim=(3, 4)).mean(dim=0)
        return self.readout(rate)

    def clamp_delays(self) -> None:
        """Puts the delays back into ``[0, max_delay]`` after an optimizer step.

        Reads clamp them anyway, but a delay left outside would get no gradient
        and never come back.
        """
        with torch.no_grad():
            self.conv.delay.clamp_(0.0, self.conv.delayedby)

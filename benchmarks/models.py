"""The synapse models benchmarked, in the three forms the implementations need.

Each model exists as a delayconv constructor, as an inferno constructor with
the same parameters, and as a plain-torch elementwise update used by the dense
formulations (``conv2d+update`` and ``conv3d``). All currents are in pC/ms with
a step of ``STEP_TIME`` ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

STEP_TIME = 1.0  # ms
CHARGE = 1.0  # pC per spike
TAU = 5.0  # ms, single exponential
TAU_DECAY = 5.0  # ms, double exponential
TAU_RISE = 2.0  # ms, double exponential

NAMES = ("delta", "delta-plus", "single-exp", "double-exp")


def delayconv_synapse(name: str):
    """The delayconv partial constructor of model ``name``."""
    import delayconv

    return _constructor(delayconv, name)


def inferno_synapse(name: str):
    """The inferno partial constructor of model ``name`` (same parameters)."""
    import inferno.neural

    return _constructor(inferno.neural, name)


def _constructor(module, name: str):
    if name == "delta":
        return module.DeltaCurrent.partialconstructor(CHARGE)
    if name == "delta-plus":
        return module.DeltaPlusCurrent.partialconstructor(CHARGE)
    if name == "single-exp":
        return module.SingleExponentialCurrent.partialconstructor(CHARGE, TAU)
    if name == "double-exp":
        return module.DoubleExponentialCurrent.partialconstructor(
            CHARGE, TAU_DECAY, TAU_RISE
        )
    raise ValueError(f"unknown synapse model {name!r}; known: {', '.join(NAMES)}")


@dataclass
class TorchSynapse:
    """A model's state and update in plain torch, for the dense formulations.

    Holds ``K`` recorded currents (0 for delta, 2 for double exponential) of
    shape ``B x C x H x W``; :meth:`step` advances them and returns the current.
    """

    name: str
    state: list[torch.Tensor]

    @classmethod
    def zeros(cls, name: str, like: torch.Tensor) -> TorchSynapse:
        count = {"delta": 0, "delta-plus": 1, "single-exp": 1, "double-exp": 2}
        return cls(name, [torch.zeros_like(like) for _ in range(count[name])])

    def clear(self) -> None:
        self.state = [torch.zeros_like(s) for s in self.state]

    def step(self, spikes: torch.Tensor) -> torch.Tensor:
        """Advances one step on input ``spikes``; returns the synaptic current.

        The state is replaced, not written in place, so that the update stays
        differentiable across steps.
        """
        if self.name in ("delta", "delta-plus"):
            return spikes * (CHARGE / STEP_TIME)
        if self.name == "single-exp":
            decay = math.exp(-STEP_TIME / TAU)
            self.state = [self.state[0] * decay + (CHARGE / TAU) * spikes]
            return self.state[0]
        jump = (CHARGE / (TAU_DECAY - TAU_RISE)) * spikes
        pos = self.state[0] * math.exp(-STEP_TIME / TAU_DECAY) + jump
        neg = self.state[1] * math.exp(-STEP_TIME / TAU_RISE) + jump
        self.state = [pos, neg]
        return pos - neg

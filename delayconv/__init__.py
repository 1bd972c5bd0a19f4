"""delayconv: fast spiking convolutions with per-weight synaptic delays.

A drop-in for the ``Conv2D`` connection of the inferno SNN library that keeps
synaptic history once per input pixel and runs each step in fused kernels.
"""

from ._dispatch import backend, get_backend, set_backend
from .conv import Conv2D
from .geometry import ConvGeometry
from .kinds import Interpolation, SynapseKind
from .synapses import (
    DeltaCurrent,
    DeltaPlusCurrent,
    DoubleExponentialCurrent,
    SingleExponentialCurrent,
    Synapse,
    SynapseConstructor,
)

__all__ = [
    "Conv2D",
    "ConvGeometry",
    "DeltaCurrent",
    "DeltaPlusCurrent",
    "DoubleExponentialCurrent",
    "Interpolation",
    "SingleExponentialCurrent",
    "Synapse",
    "SynapseConstructor",
    "SynapseKind",
    "backend",
    "get_backend",
    "set_backend",
]

__version__ = "0.1.0"

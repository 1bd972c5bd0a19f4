"""Identifiers of synapse models and interpolation modes.

The compiled kernels receive these as plain integers; the values are part of
the operator contract and must not change.
"""

from __future__ import annotations

from enum import IntEnum


class SynapseKind(IntEnum):
    """Synapse models, in the order the kernels number them."""

    DELTA = 0
    DELTA_PLUS = 1
    SINGLE_EXPONENTIAL = 2
    DOUBLE_EXPONENTIAL = 3


class Interpolation(IntEnum):
    """Ways to read between two observations of a ring."""

    PREVIOUS = 0
    NEAREST = 1
    LINEAR = 2

    @classmethod
    def named(cls, name: str) -> Interpolation:
        return cls[name.upper()]

"""What is measured: a case is one layer, synapse model, mode and input.

The plan of a run is the cross product of the chosen layers, models and modes
(the table), plus two sweeps over one layer for the plots: its maximum delay
and its batch size. A case that both the table and a sweep need runs once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .layers import Layer

# One simulation step; T steps forward; T steps forward and backward.
MODES = ("step", "seq-fwd", "seq-fwdbwd")
GROUPS = ("table", "delay-sweep", "batch-sweep")


@dataclass(frozen=True)
class Case:
    """One measured configuration.

    Attributes:
        layer: the layer's sizes and maximum delay.
        synapse: synapse model name (see :mod:`benchmarks.models`).
        mode: one of :data:`MODES`.
        steps: ``T`` for the sequence modes, 1 for a step.
        density: fraction of input pixels that spike in a step.
        device: ``cpu`` or ``cuda``.
        seed: seed of the spikes, weights and delays.
        groups: the parts of the report the case belongs to.
    """

    layer: Layer
    synapse: str
    mode: str
    steps: int
    density: float
    device: str
    seed: int = 0
    groups: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def sequence(self) -> bool:
        return self.mode != "step"

    @property
    def backward(self) -> bool:
        return self.mode == "seq-fwdbwd"

    @property
    def label(self) -> str:
        """Short name for tables: ``nmnist-d10 delta step B32``."""
        steps = f" T{self.steps}" if self.sequence else ""
        return (
            f"{self.layer.name} {self.synapse} {self.mode}{steps} B{self.layer.batch}"
        )

    def to_json(self) -> dict:
        record = dataclasses.asdict(self)
        record["groups"] = sorted(self.groups)
        record["label"] = self.label
        return record

    @classmethod
    def from_json(cls, record: dict) -> Case:
        """The inverse of :meth:`to_json` (the label is recomputed)."""
        fields = {k: v for k, v in record.items() if k != "label"}
        fields["layer"] = Layer(**fields["layer"])
        fields["groups"] = frozenset(fields.get("groups", ()))
        return cls(**fields)

    def smaller(self) -> Case:
        """The same case with batch 1 and at most 2 steps, to warm code up."""
        layer = dataclasses.replace(self.layer, batch=1)
        return dataclasses.replace(self, layer=layer, steps=min(self.steps, 2))


@dataclass(frozen=True)
class PlanSpec:
    """The choices of a run that decide its cases (see :func:`plan`)."""

    layers: list[Layer]
    synapses: list[str]
    sequence_synapses: list[str]
    modes: list[str]
    steps: list[int]
    density: float
    device: str
    seed: int
    sweep_layer: Layer | None
    sweep_synapse: str
    sweep_delays: list[int]
    sweep_batches: list[int]


def plan(spec: PlanSpec) -> list[Case]:
    """All cases of a run, the table's first, each once with all its groups."""
    cases: dict[Case, set[str]] = {}

    def add(layer: Layer, synapse: str, mode: str, steps: int, group: str) -> None:
        case = Case(layer, synapse, mode, steps, spec.density, spec.device, spec.seed)
        cases.setdefault(case, set()).add(group)

    for layer in spec.layers:
        for mode in spec.modes:
            if mode == "step":
                for synapse in spec.synapses:
                    add(layer, synapse, mode, 1, "table")
                continue
            # The sequence modes are about delays: T steps of an undelayed layer
            # are one batched conv2d, which the floor already shows.
            if layer.max_delay is None:
                continue
            for synapse in spec.sequence_synapses:
                for steps in spec.steps:
                    add(layer, synapse, mode, steps, "table")

    if spec.sweep_layer is not None:
        base = spec.sweep_layer
        for delay in spec.sweep_delays:
            add(base.with_delay(delay), spec.sweep_synapse, "step", 1, "delay-sweep")
        for batch in spec.sweep_batches:
            add(base.with_batch(batch), spec.sweep_synapse, "step", 1, "batch-sweep")

    return [dataclasses.replace(c, groups=frozenset(g)) for c, g in cases.items()]

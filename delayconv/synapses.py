"""Synapse models whose history is kept once per input pixel, in a ring.

A synapse of a convolution sees every input pixel through up to ``kH * kW``
receptive fields. The four models here are elementwise and start from zero, so
they keep their state once per pixel, ``R x B x C x H x W`` (spikes as bool,
currents in the weight dtype), and unfold it into the ``B x N x L`` synapse
layout only when the unfolded view is read. Made with a plain shape instead of a
convolution geometry (the common constructor protocol), they keep that shape.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import torch
import torch.nn as nn

from . import _checks, reference
from .geometry import ConvGeometry
from .kinds import Interpolation, SynapseKind
from .reference import SynapseSpec
from .selection import (
    INTERPOLATIONS,
    check_selector,
    gather_back,
    interpolate,
    locate,
    ring_records,
)


class Layout(Protocol):
    """How compact state maps to the synapse's logical (unfolded) shape."""

    state_shape: tuple[int, ...]
    synaptic_shape: tuple[int, ...]

    def unfold(
        self, data: torch.Tensor, work_dtype: torch.dtype = ...
    ) -> torch.Tensor: ...


class FlatLayout:
    """The identity layout: one state element per synapse."""

    def __init__(self, shape: tuple[int, ...] | int):
        if isinstance(shape, (tuple, list)):
            dims = tuple(
                _checks.integer(f"shape[{i}]", d, minimum=1)
                for i, d in enumerate(shape)
            )
        else:
            dims = (_checks.integer("shape", shape, minimum=1),)
        self.state_shape = dims
        self.synaptic_shape = dims

    def unfold(
        self, data: torch.Tensor, work_dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return data


def _layout(shape: tuple[int, ...] | int | ConvGeometry) -> Layout:
    return shape if isinstance(shape, ConvGeometry) else FlatLayout(shape)


class Synapse(nn.Module):
    """Base class of the compact synapse models.

    Buffers (all part of the ``state_dict``):

    * ``spike_ring``: ``R x B x *S`` bool, the last ``R`` input spikes;
    * ``current_ring``: ``K x R x B x *S``, the last ``R`` values of each of the
      model's ``K`` recorded currents;
    * ``ring_head``: 0-d int64, the slot of the newest observation.

    ``S`` is ``(C, H, W)`` for a synapse made by :class:`~delayconv.Conv2D` and
    the given shape otherwise. A fresh or cleared ring is all zeros.
    """

    kind: SynapseKind
    recorded: tuple[str, ...] = ()

    def __init__(
        self,
        shape: tuple[int, ...] | int | ConvGeometry,
        step_time: float,
        delay: float,
        batch_size: int,
        interp_mode: str,
        interp_tol: float,
        current_overbound: float | None,
        spike_overbound: bool | None,
        inplace: bool,
    ):
        super().__init__()
        self.layout = _layout(shape)
        self._step_time = _checks.real("step_time", step_time, positive=True)
        self._delay = _checks.real("delay", delay, nonnegative=True)
        self._batch_size = _checks.integer("batch_size", batch_size, minimum=1)
        self.interp_mode = _checks.choice("interp_mode", interp_mode, INTERPOLATIONS)
        self.interp_tol = _checks.real("interp_tol", interp_tol, nonnegative=True)
        self.current_overbound = _checks.optional_real(
            "current_overbound", current_overbound
        )
        self.spike_overbound = _checks.optional_bool("spike_overbound", spike_overbound)
        self.inplace = _checks.flag("inplace", inplace)
        self.register_buffer("ring_head", torch.zeros((), dtype=torch.long))
        self.register_buffer("spike_ring", torch.empty(0, dtype=torch.bool))
        self.register_buffer("current_ring", torch.empty(0))
        self._allocate(torch.get_default_dtype())

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, batchsz={self.batchsz}, dt={self.dt}, "
            f"delay={self.delay}, records={self.records}"
        )

    # ----- configuration --------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the synapses (``(N, L)`` under a convolution), no batch."""
        return tuple(self.layout.synaptic_shape)

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def batchedshape(self) -> tuple[int, ...]:
        return (self.batchsz, *self.shape)

    @property
    def batchsz(self) -> int:
        """Batch size; setting a new one clears the state."""
        return self._batch_size

    @batchsz.setter
    def batchsz(self, value: int) -> None:
        value = _checks.integer("batchsz", value, minimum=1)
        if value != self._batch_size:
            self._batch_size = value
            self._allocate(self.current_ring.dtype)

    @property
    def dt(self) -> float:
        """Simulation step in ms; setting it resizes and clears the ring."""
        return self._step_time

    @dt.setter
    def dt(self, value: float) -> None:
        self._step_time = _checks.real("dt", value, positive=True)
        self._allocate(self.current_ring.dtype)

    @property
    def delay(self) -> float:
        """Maximum supported delay in ms; setting it resizes and clears the ring."""
        return self._delay

    @delay.setter
    def delay(self, value: float) -> None:
        self._delay = _checks.real("delay", value, nonnegative=True)
        self._allocate(self.current_ring.dtype)

    @property
    def records(self) -> int:
        """``R``: observations held, ``ceil(delay / dt) + 1``."""
        return ring_records(self._delay, self._step_time)

    @property
    def state_bytes(self) -> int:
        """Bytes of synaptic state, the whole ring of every recorded quantity."""
        return sum(
            t.numel() * t.element_size() for t in (self.spike_ring, self.current_ring)
        )

    def _allocate(self, dtype: torch.dtype) -> None:
        device = self.ring_head.device
        lead = (self.records, self._batch_size, *self.layout.state_shape)
        self.spike_ring = torch.zeros(lead, dtype=torch.bool, device=device)
        self.current_ring = torch.zeros(
            (len(self.recorded), *lead), dtype=dtype, device=device
        )
        self.ring_head = torch.zeros((), dtype=torch.long, device=device)

    def clear(self, **kwargs: Any) -> None:
        """Resets the synapses to rest: every observation zero, spikes False."""
        with torch.no_grad():
            self.spike_ring.zero_()
            self.current_ring.zero_()
            self.ring_head.zero_()

    def match_dtype(self, dtype: torch.dtype) -> None:
        """Keeps the recorded currents in ``dtype`` (the weight dtype)."""
        if self.current_ring.dtype != dtype:
            self.current_ring = self.current_ring.to(dtype)

    # ----- simulation -----------------------------------------------------

    def constants(self) -> tuple[float, float, float]:
        """``(spike_charge, tau_a, tau_b)``: the model's constants in the kernels'
        order (see :class:`~delayconv.reference.SynapseSpec`)."""
        raise NotImplementedError

    def spec(self) -> SynapseSpec:
        """The model as the maths and the kernels take it."""
        charge, tau_a, tau_b = self.constants()
        return SynapseSpec(
            kind=self.kind,
            spike_charge=charge,
            tau_a=tau_a,
            tau_b=tau_b,
            step_time=self.dt,
            max_delay=self.delay,
            interp=Interpolation.named(self.interp_mode),
            tolerance=self.interp_tol,
            current_overbound=self.current_overbound,
        )

    def push(self, *inputs: torch.Tensor) -> None:
        """Applies one step of input (``B x *S``) and records it in the ring.

        Extra inputs are injected currents, summed (``DeltaPlusCurrent`` only).
        """
        injected = _sum_extras(inputs[1:])
        dtype = self.current_ring.dtype
        currents = reference.update(
            self.spec(), self.latest_currents(), inputs[0].to(dtype), injected
        )
        with torch.no_grad():
            head = torch.remainder(self.ring_head + 1, self.records)
            self.spike_ring.index_copy_(0, head.view(1), (inputs[0] != 0).unsqueeze(0))
            self.current_ring.index_copy_(1, head.view(1), currents.unsqueeze(1))
            self.ring_head.copy_(head)

    def forward(self, *inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Runs one step and returns the synaptic currents (``B x *shape``).

        A synapse made for a convolution takes compact input ``B x C x H x W``.
        """
        self.push(*inputs)
        return self.current

    def latest_currents(self) -> torch.Tensor:
        """The newest value of each recorded current, ``K x B x *S``."""
        return self.current_ring.index_select(1, self.ring_head.view(1)).squeeze(1)

    def latest_spikes(self) -> torch.Tensor:
        """The newest input spikes, ``B x *S``."""
        return self.spike_ring.index_select(0, self.ring_head.view(1)).squeeze(0)

    def compact_current(self) -> torch.Tensor:
        """The newest synaptic current in compact layout, ``B x *S``."""
        return reference.latest_current(
            self.spec(), self.spike_ring, self.current_ring, self.ring_head
        )

    # ----- unfolded views -------------------------------------------------

    @property
    def current(self) -> torch.Tensor:
        """Synaptic currents at present, unfolded: ``B x *shape``."""
        return self.layout.unfold(self.compact_current())

    @property
    def spike(self) -> torch.Tensor:
        """Input spikes at present, unfolded: ``B x *shape`` bool."""
        return self.layout.unfold(self.latest_spikes())

    def spike_at(self, selector: torch.Tensor) -> torch.Tensor:
        """Input spikes ``selector`` ms ago, bool.

        Args:
            selector: delays in ms, ``B x *shape``, or ``B x *shape x D`` for
                ``D`` reads per synapse.
        """
        check_selector(selector, self.batchedshape)
        mode = "nearest" if self.interp_mode == "linear" else self.interp_mode
        located = locate(selector, self.dt, self.delay, self.records, self.interp_tol)
        ring = self.layout.unfold(self.spike_ring)
        older = gather_back(ring, self.ring_head, located.older)
        newer = gather_back(ring, self.ring_head, located.newer)
        value = interpolate(older, newer, located, mode, self.dt)
        if self.spike_overbound is not None:
            value = torch.where(located.inbound, value, self.spike_overbound)
        return value.bool()

    def current_at(self, selector: torch.Tensor) -> torch.Tensor:
        """Synaptic currents ``selector`` ms ago.

        Args:
            selector: delays in ms, ``B x *shape``, or ``B x *shape x D`` for
                ``D`` reads per synapse.
        """
        return self._read(self.spec(), selector)

    def _read(self, spec: SynapseSpec, selector: torch.Tensor, ring: int | None = None):
        check_selector(selector, self.batchedshape)
        rings = reference.readout_rings(spec, self.spike_ring, self.current_ring)
        if ring is not None:
            rings = rings[ring : ring + 1]
        unfolded = [self.layout.unfold(r, self.current_ring.dtype) for r in rings]
        return reference.read_current(spec, unfolded, self.ring_head, selector)


def _sum_extras(extras: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    total = None
    for extra in extras:
        total = extra if total is None else total + extra
    return total


class _DeltaFamily(Synapse):
    """Shared constructor of the two memoryless models."""

    def __init__(
        self,
        shape: tuple[int, ...] | int | ConvGeometry,
        step_time: float,
        *,
        spike_charge: float,
        delay: float = 0.0,
        interp_mode: str = "previous",
        interp_tol: float = 0.0,
        current_overbound: float | None = 0.0,
        spike_overbound: bool | None = False,
        batch_size: int = 1,
        inplace: bool = False,
    ):
        charge = _checks.real("spike_charge", spike_charge, nonzero=True)
        super().__init__(
            shape,
            step_time,
            delay,
            batch_size,
            interp_mode,
            interp_tol,
            current_overbound,
            spike_overbound,
            inplace,
        )
        self.spike_charge = charge

    @classmethod
    def partialconstructor(
        cls,
        spike_charge: float,
        interp_mode: str = "previous",
        interp_tol: float = 0.0,
        current_overbound: float | None = 0.0,
        spike_overbound: bool | None = False,
        inplace: bool = False,
    ) -> SynapseConstructor:
        """Returns a constructor with the common signature, for connections."""
        return SynapseConstructor(
            cls,
            spike_charge=spike_charge,
            interp_mode=interp_mode,
            interp_tol=interp_tol,
            current_overbound=current_overbound,
            spike_overbound=spike_overbound,
            inplace=inplace,
        )

    def constants(self) -> tuple[float, float, float]:
        return (self.spike_charge, 0.0, 0.0)


class DeltaCurrent(_DeltaFamily):
    r"""Memoryless synapse: a spike carries charge ``Q`` within one step.

    ``I(t) = Q / dt`` where the input spikes, else 0. Only spikes are recorded;
    currents are derived from them.

    Args:
        shape: synapse shape, or the convolution geometry when made by
            :class:`~delayconv.Conv2D`.
        step_time: simulation step ``dt``, in ms.
        spike_charge: charge per spike ``Q``, in pC.
        delay: maximum supported delay, in ms.
        interp_mode: ``"previous"``, ``"nearest"`` or ``"linear"`` between
            observations (spikes read ``"linear"`` as ``"nearest"``).
        interp_tol: distance in ms within which a delay counts as on an
            observation.
        current_overbound: current read for delays beyond the maximum, or
            ``None`` to read at the nearest bound.
        spike_overbound: spike read for delays beyond the maximum, or ``None``.
        batch_size: batch size.
        inplace: accepted for compatibility; the ring is always written in place.
    """

    kind = SynapseKind.DELTA
    recorded = ()


class DeltaPlusCurrent(_DeltaFamily):
    r"""Memoryless synapse with a pass-through for graded and injected current.

    ``I(t) = x Q / dt + sum of injected currents``; spikes are ``x != 0``. Both
    spikes and currents are recorded. Arguments as :class:`DeltaCurrent`; extra
    inputs to ``forward`` are injected currents shaped like the input.
    """

    kind = SynapseKind.DELTA_PLUS
    recorded = ("current",)


class SingleExponentialCurrent(Synapse):
    r"""Current that jumps by ``Q / tau`` per spike and decays with ``tau``.

    ``I <- I exp(-dt / tau) + (Q / tau) x``. Delayed currents between two
    observations decay from the older one, whatever ``spike_interp_mode`` says;
    that mode governs spikes only.

    Args:
        shape: synapse shape, or the convolution geometry.
        step_time: simulation step ``dt``, in ms.
        spike_charge: charge per spike ``Q``, in pC.
        time_constant: decay time constant ``tau``, in ms.
        delay: maximum supported delay, in ms.
        spike_interp_mode: ``"previous"`` or ``"nearest"`` for spikes.
        interp_tol, current_overbound, spike_overbound, batch_size, inplace:
            as :class:`DeltaCurrent`.
    """

    kind = SynapseKind.SINGLE_EXPONENTIAL
    recorded = ("current",)

    def __init__(
        self,
        shape: tuple[int, ...] | int | ConvGeometry,
        step_time: float,
        spike_charge: float,
        time_constant: float,
        delay: float = 0.0,
        spike_interp_mode: str = "previous",
        interp_tol: float = 0.0,
        current_overbound: float | None = 0.0,
        spike_overbound: bool | None = False,
        batch_size: int = 1,
        inplace: bool = False,
    ):
        charge = _checks.real("spike_charge", spike_charge, nonzero=True)
        tau = _checks.real("time_constant", time_constant, positive=True)
        _checks.choice("spike_interp_mode", spike_interp_mode, INTERPOLATIONS)
        super().__init__(
            shape,
            step_time,
            delay,
            batch_size,
            spike_interp_mode,
            interp_tol,
            current_overbound,
            spike_overbound,
            inplace,
        )
        self.spike_charge = charge
        self.time_constant = tau

    @classmethod
    def partialconstructor(
        cls,
        spike_charge: float,
        time_constant: float,
        spike_interp_mode: str = "previous",
        interp_tol: float = 0.0,
        current_overbound: float | None = 0.0,
        spike_overbound: bool | None = False,
        inplace: bool = False,
    ) -> SynapseConstructor:
        """Returns a constructor with the common signature, for connections."""
        return SynapseConstructor(
            cls,
            spike_charge=spike_charge,
            time_constant=time_constant,
            spike_interp_mode=spike_interp_mode,
            interp_tol=interp_tol,
            current_overbound=current_overbound,
            spike_overbound=spike_overbound,
            inplace=inplace,
        )

    def constants(self) -> tuple[float, float, float]:
        return (self.spike_charge, self.time_constant, 0.0)


class DoubleExponentialCurrent(Synapse):
    r"""Difference of two exponentials: a current that rises, then decays.

    ``P <- P exp(-dt / tau_d) + Q / (tau_d - tau_r) x``,
    ``N <- N exp(-dt / tau_r) + Q / (tau_d - tau_r) x``, ``I = P - N``. Spikes,
    ``P`` and ``N`` are recorded; delayed ``P`` and ``N`` decay from the older
    observation with their own time constants.

    Args:
        shape: synapse shape, or the convolution geometry.
        step_time: simulation step ``dt``, in ms.
        spike_charge: charge per spike ``Q``, in pC.
        tc_decay: decay time constant ``tau_d``, in ms, above ``tc_rise``.
        tc_rise: rise time constant ``tau_r``, in ms.
        delay, spike_interp_mode, interp_tol, current_overbound,
            spike_overbound, batch_size, inplace: as
            :class:`SingleExponentialCurrent`.
    """

    kind = SynapseKind.DOUBLE_EXPONENTIAL
    recorded = ("pos_current", "neg_current")

    def __init__(
        self,
        shape: tuple[int, ...] | int | ConvGeometry,
        step_time: float,
        spike_charge: float,
        tc_decay: float,
        tc_rise: float,
        delay: float = 0.0,
        spike_interp_mode: str = "previous",
        interp_tol: float = 0.0,
        current_overbound: float | None = 0.0,
        spike_overbound: bool | None = False,
        batch_size: int = 1,
        inplace: bool = False,
    ):
        charge = _checks.real("spike_charge", spike_charge, nonzero=True)
        rise = _checks.real("tc_rise", tc_rise, positive=True)
        decay = _checks.real("tc_decay", tc_decay, positive=True)
        if decay <= rise:
            raise ValueError(
                f"'tc_decay' must be greater than 'tc_rise' ({rise}), got {decay}"
            )
        _checks.choice("spike_interp_mode", spike_interp_mode, INTERPOLATIONS)
        super().__init__(
            shape,
            step_time,
            delay,
            batch_size,
            spike_interp_mode,
            interp_tol,
            current_overbound,
            spike_overbound,
            inplace,
        )
        self.spike_charge = charge
        self.tc_decay = decay
        self.tc_rise = rise

    @classmethod
    def partialconstructor(
        cls,
        spike_charge: float,
        tc_decay: float,
        tc_rise: float,
        spike_interp_mode: str = "previous",
        interp_tol: float = 0.0,
        current_overbound: float | None = 0.0,
        spike_overbound: bool | None = False,
        inplace: bool = False,
    ) -> SynapseConstructor:
        """Returns a constructor with the common signature, for connections."""
        return SynapseConstructor(
            cls,
            spike_charge=spike_charge,
            tc_decay=tc_decay,
            tc_rise=tc_rise,
            spike_interp_mode=spike_interp_mode,
            interp_tol=interp_tol,
            current_overbound=current_overbound,
            spike_overbound=spike_overbound,
            inplace=inplace,
        )

    def constants(self) -> tuple[float, float, float]:
        return (self.spike_charge, self.tc_decay, self.tc_rise)

    @property
    def pos_current(self) -> torch.Tensor:
        """Rising component ``P`` at present, unfolded."""
        return self.layout.unfold(self.latest_currents()[0])

    @property
    def neg_current(self) -> torch.Tensor:
        """Subtracted component ``N`` at present, unfolded."""
        return self.layout.unfold(self.latest_currents()[1])

    def _component_at(self, index: int, selector: torch.Tensor) -> torch.Tensor:
        tau = self.tc_decay if index == 0 else self.tc_rise
        single = dataclasses.replace(
            self.spec(), kind=SynapseKind.SINGLE_EXPONENTIAL, tau_a=tau, tau_b=0.0
        )
        return self._read(single, selector, ring=index)

    def pos_current_at(self, selector: torch.Tensor) -> torch.Tensor:
        """``P`` ``selector`` ms ago (``B x *shape [x D]``)."""
        return self._component_at(0, selector)

    def neg_current_at(self, selector: torch.Tensor) -> torch.Tensor:
        """``N`` ``selector`` ms ago (``B x *shape [x D]``)."""
        return self._component_at(1, selector)


class SynapseConstructor:
    """A synapse model with its parameters bound, awaiting its shape.

    Called with the common protocol ``(shape, step_time, delay, batch_size)`` it
    returns a synapse of that shape. :class:`~delayconv.Conv2D` instead calls
    :meth:`compact`, which keeps the state once per input pixel.
    """

    def __init__(self, model: type[Synapse], **params: Any):
        self.model = model
        self.params = params
        # Build once with a dummy shape so that bad parameters fail here, where
        # the user wrote them, rather than inside a connection's constructor.
        model(1, 1.0, delay=0.0, batch_size=1, **params)

    def __call__(
        self,
        shape: tuple[int, ...] | int,
        step_time: float,
        delay: float,
        batch_size: int,
    ) -> Synapse:
        return self.model(
            shape, step_time, delay=delay, batch_size=batch_size, **self.params
        )

    def compact(
        self, geometry: ConvGeometry, step_time: float, delay: float, batch_size: int
    ) -> Synapse:
        return self.model(
            geometry, step_time, delay=delay, batch_size=batch_size, **self.params
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.model.__name__}.partialconstructor({args})"

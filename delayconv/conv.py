"""The delayed spiking convolution layer, a drop-in for inferno's ``Conv2D``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from . import _checks, _dispatch
from .geometry import ConvGeometry
from .synapses import Synapse, SynapseConstructor

Initializer = Callable[[torch.Tensor], torch.Tensor]

_warned_generic: set[str] = set()


class Conv2D(nn.Module):
    r"""Convolution of spiking input through synapses with per-weight delays.

    Each call of :meth:`forward` is one simulation step of ``step_time`` ms: the
    input updates the synapses, then every weight ``W[f, c, i, j]`` reads the
    synaptic current of its input pixel as it was ``delay[f, c, i, j]`` ms ago,
    and the layer returns the convolution of those currents (plus the bias).
    The synapses keep their history once per input pixel, never once per
    receptive-field copy.

    Shapes: ``B`` batch, ``C`` channels, ``H x W`` input, ``F`` filters,
    ``kH x kW`` kernel, ``Hout x Wout`` output, ``N = C kH kW``,
    ``L = Hout Wout``. ``weight`` and ``delay`` are ``F x C x kH x kW``, ``bias``
    is ``F``.

    Args:
        height: input height ``H``.
        width: input width ``W``.
        channels: input channels ``C``.
        filters: filters (output channels) ``F``.
        step_time: length of a simulation step, in ms.
        kernel: kernel size, an int or a pair.
        stride: stride, an int or a pair. Defaults to 1.
        padding: zero padding added to both sides, an int or a pair, applied
            after the synapse. Defaults to 0.
        dilation: dilation, an int or a pair. Defaults to 1.
        synapse: partial constructor of the synapse model, such as
            ``DeltaCurrent.partialconstructor(1.0)``. Any other constructor with
            the signature ``(shape, step_time, delay, batch_size)`` works through
            a slow generic path.
        bias: whether the layer has a learnable additive bias.
        delay: maximum delay in ms; ``None`` for a layer without delays. With 0
            a ``delay_`` parameter exists but is not used until the maximum
            grows.
        batch_size: batch size of the simulation.
        weight_init: maps the default weights (uniform on [0, 1)) to the
            initial ones.
        bias_init: maps the default biases (uniform on [0, 1)) to the initial
            ones.
        delay_init: maps the default delays (zeros) to the initial ones, in ms.

    Gradients: the parameters are created with ``requires_grad=False``, as in
    inferno; turn it on to train. A step then differentiates with respect to
    ``weight``, ``bias`` and the present input; earlier steps held in the ring
    are constants.

    Example:
        >>> import torch
        >>> from delayconv import Conv2D, DeltaCurrent
        >>> conv = Conv2D(16, 16, 2, 8, 1.0, 3, padding=1, delay=4.0,
        ...               synapse=DeltaCurrent.partialconstructor(1.0),
        ...               delay_init=lambda d: torch.rand_like(d) * 4.0)
        >>> for _ in range(10):
        ...     out = conv(torch.rand(1, 2, 16, 16) < 0.1)
        >>> out.shape
        torch.Size([1, 8, 16, 16])
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels: int,
        filters: int,
        step_time: float,
        kernel: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        synapse: SynapseConstructor | Callable[..., nn.Module],
        bias: bool = False,
        delay: float | None = None,
        batch_size: int = 1,
        weight_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        delay_init: Initializer | None = None,
    ):
        super().__init__()
        geometry = ConvGeometry(
            channels=_checks.integer("channels", channels, minimum=1),
            height=_checks.integer("height", height, minimum=1),
            width=_checks.integer("width", width, minimum=1),
            kernel=_checks.pair("kernel", kernel, minimum=1),
            stride=_checks.pair("stride", stride, minimum=1),
            padding=_checks.pair("padding", padding, minimum=0),
            dilation=_checks.pair("dilation", dilation, minimum=1),
        )
        self.filters = _checks.integer("filters", filters, minimum=1)
        step_time = _checks.real("step_time", step_time, positive=True)
        if delay is not None:
            delay = _checks.real("delay", delay, nonnegative=True)
        batch_size = _checks.integer("batch_size", batch_size, minimum=1)
        _checks.flag("bias", bias)
        _checks.optional_callable("weight_init", weight_init)
        _checks.optional_callable("bias_init", bias_init)
        _checks.optional_callable("delay_init", delay_init)
        _check_output(geometry)
        self.geometry = geometry

        max_delay = 0.0 if delay is None else delay
        if isinstance(synapse, SynapseConstructor):
            made = synapse.compact(geometry, step_time, max_delay, batch_size)
        elif callable(synapse):
            made = synapse(geometry.synaptic_shape, step_time, max_delay, batch_size)
        else:
            raise TypeError(
                "'synapse' must be a synapse constructor such as "
                f"DeltaCurrent.partialconstructor(1.0), got {type(synapse).__name__}"
            )
        if not isinstance(made, nn.Module):
            raise TypeError(
                f"'synapse' must construct a torch.nn.Module, got {type(made).__name__}"
            )
        if not isinstance(synapse, SynapseConstructor):
            _warn_generic(made)
        self.register_module("synapse_", made)

        kernel_shape = (self.filters, geometry.channels, *geometry.kernel)
        self.weight_ = nn.Parameter(torch.rand(kernel_shape), requires_grad=False)
        if bias:
            self.bias_ = nn.Parameter(torch.rand(self.filters), requires_grad=False)
        if delay is not None:
            self.delay_ = nn.Parameter(torch.zeros(kernel_shape), requires_grad=False)

        if weight_init is not None:
            self.weight = weight_init(self.weight)
        if bias_init is not None and self.biased:
            self.bias = bias_init(self.bias)
        if delay_init is not None and self.delayedby is not None:
            self.delay = delay_init(self.delay)

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module registers any Parameter assigned to an attribute, bypassing
        # the weight, bias and delay setters (and failing, as their parameters
        # exist under other names). Properties get the value, as in inferno.
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def extra_repr(self) -> str:
        return (
            f"inshape={self.inshape}, outshape={self.outshape}, delay={self.delayedby}"
        )

    # ----- geometry -------------------------------------------------------

    @property
    def height(self) -> int:
        return self.geometry.height

    @property
    def width(self) -> int:
        return self.geometry.width

    @property
    def channels(self) -> int:
        return self.geometry.channels

    @property
    def kernel(self) -> tuple[int, int]:
        return self.geometry.kernel

    @property
    def stride(self) -> tuple[int, int]:
        return self.geometry.stride

    @property
    def padding(self) -> tuple[int, int]:
        return self.geometry.padding

    @property
    def dilation(self) -> tuple[int, int]:
        return self.geometry.dilation

    @property
    def outheight(self) -> int:
        return self.geometry.out_height

    @property
    def outwidth(self) -> int:
        return self.geometry.out_width

    @property
    def inshape(self) -> tuple[int, int, int]:
        """Input shape without the batch: ``(C, H, W)``."""
        return self.geometry.state_shape

    @property
    def outshape(self) -> tuple[int, int, int]:
        """Output shape without the batch: ``(F, Hout, Wout)``, where
        ``Hout = floor((H + 2 pH - dH (kH - 1) - 1) / sH + 1)`` and likewise
        ``Wout``."""
        return (self.filters, self.outheight, self.outwidth)

    @property
    def batched_inshape(self) -> tuple[int, ...]:
        return (self.batchsz, *self.inshape)

    @property
    def batched_outshape(self) -> tuple[int, ...]:
        return (self.batchsz, *self.outshape)

    @property
    def insize(self) -> int:
        """Inputs per sample, ``C H W``."""
        return math.prod(self.inshape)

    @property
    def outsize(self) -> int:
        """Outputs per sample, ``F Hout Wout``."""
        return math.prod(self.outshape)

    # ----- parameters and state -------------------------------------------

    @property
    def weight(self) -> nn.Parameter:
        """Weights, ``F x C x kH x kW``; setting replaces their data."""
        return self.weight_

    @weight.setter
    def weight(self, value: torch.Tensor) -> None:
        self.weight_.data = self._checked_parameter("weight", value, self.weight_)

    @property
    def bias(self) -> nn.Parameter | None:
        """Biases, ``F``, or None; setting replaces their data (if any)."""
        return getattr(self, "bias_", None)

    @bias.setter
    def bias(self, value: torch.Tensor) -> None:
        if self.bias is not None:
            self.bias_.data = self._checked_parameter("bias", value, self.bias_)

    @property
    def delay(self) -> nn.Parameter | None:
        """Delays in ms, ``F x C x kH x kW``, or None; setting replaces their
        data (if any)."""
        return getattr(self, "delay_", None)

    @delay.setter
    def delay(self, value: torch.Tensor) -> None:
        if self.delay is not None:
            self.delay_.data = self._checked_parameter("delay", value, self.delay_)

    @staticmethod
    def _checked_parameter(
        name: str, value: Any, current: torch.Tensor
    ) -> torch.Tensor:
        value = value.data if isinstance(value, nn.Parameter) else value
        _checks.tensor_like(name, value, tuple(current.shape), device=current.device)
        if value.dtype != current.dtype:
            # A parameter of another dtype than its siblings and the ring would
            # fail later, in the middle of a step; convert the whole layer.
            raise TypeError(
                f"'{name}' must have the layer's dtype {current.dtype}, got "
                f"{value.dtype}; convert the value, or the layer with .to(dtype)"
            )
        return value

    @property
    def biased(self) -> bool:
        return self.bias is not None

    @property
    def delayedby(self) -> float | None:
        """The synapse's maximum delay in ms (possibly 0.0), or None without
        delays."""
        if self.delay is None:
            return None
        return self.synapse.delay

    @property
    def synapse(self) -> nn.Module:
        return self.synapse_

    @property
    def batchsz(self) -> int:
        """Batch size; setting a new one clears the synaptic state."""
        return self.synapse.batchsz

    @batchsz.setter
    def batchsz(self, value: int) -> None:
        self.synapse.batchsz = value

    @property
    def dt(self) -> float:
        """Simulation step in ms; setting it clears the synaptic state."""
        return self.synapse.dt

    @dt.setter
    def dt(self, value: float) -> None:
        self.synapse.dt = value

    def clear(self, **kwargs: Any) -> None:
        """Resets the synapses to rest."""
        self.synapse.clear(**kwargs)

    @property
    def selector(self) -> torch.Tensor:
        """Delays (zeros without delays) as ``B x N x L x F``.

        An expanded view: elements share memory with one another and with
        :attr:`delay`.
        """
        delays = (
            self.delay if self.delayedby is not None else torch.zeros_like(self.weight)
        )
        columns = delays.reshape(self.filters, -1).t()
        return columns[None, :, None, :].expand(
            self.batchsz, -1, self.geometry.fields, -1
        )

    @property
    def syncurrent(self) -> torch.Tensor:
        """Synaptic currents as the layer last used them: ``B x N x L x F``
        read at each weight's delay, or ``B x N x L`` without delays."""
        if self.delayedby:
            return self.synapse.current_at(self.selector)
        return self.synapse.current

    @property
    def synspike(self) -> torch.Tensor:
        """Input spikes as the layer last used them, shaped as
        :attr:`syncurrent`."""
        if self.delayedby:
            return self.synapse.spike_at(self.selector)
        return self.synapse.spike

    # ----- reshaping ------------------------------------------------------

    def like_synaptic(self, data: torch.Tensor) -> torch.Tensor:
        """Unfolds input-shaped data: ``B x C x H x W -> B x N x L``.

        Non-floating data is unfolded in the weight dtype and cast back.
        """
        return self.geometry.unfold(data, self.weight.dtype)

    def like_input(self, data: torch.Tensor) -> torch.Tensor:
        """Folds synapse-shaped data back: ``B x N x L -> B x C x H x W``.

        Each pixel takes the mean of its receptive-field copies; a pixel no
        field covers reads 0. Non-floating data is folded in the weight dtype
        and cast back.
        """
        if data.is_floating_point():
            return self.geometry.fold_mean(data)
        return self.geometry.fold_mean(data.to(self.weight.dtype)).to(data.dtype)

    def like_bias(self, data: torch.Tensor) -> torch.Tensor:
        """Reshapes ``F x 1 x 1 x 1`` data to the bias shape ``F``."""
        if data.dim() != 4 or tuple(data.shape[1:]) != (1, 1, 1):
            raise ValueError(
                f"'data' must have shape (F, 1, 1, 1), got {tuple(data.shape)}"
            )
        return data.reshape(data.shape[0])

    def presyn_receptive(self, data: torch.Tensor) -> torch.Tensor:
        """Reshapes synapse-shaped data for pre-post learning rules.

        ``B x N x L -> B x 1 x C x kH x kW x L`` and
        ``B x N x L x F -> B x F x C x kH x kW x L``.
        """
        if data.dim() < 3:
            raise ValueError(
                "'data' must have shape (B, N, L) or (B, N, L, F), got "
                f"{tuple(data.shape)}"
            )
        trailing = tuple(range(3, data.dim()))
        moved = data.permute(0, *trailing, 1, 2)
        return moved.reshape(
            data.shape[0], -1, self.channels, *self.kernel, data.shape[2]
        )

    def postsyn_receptive(self, data: torch.Tensor) -> torch.Tensor:
        """Reshapes output-shaped data for pre-post learning rules:
        ``B x F x Hout x Wout -> B x F x 1 x 1 x 1 x L``."""
        return data.reshape(*data.shape[:2], 1, 1, 1, -1)

    # ----- simulation -----------------------------------------------------

    def forward(self, *inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Runs one simulation step.

        Args:
            *inputs: the input ``B x C x H x W`` (bool, integer or floating
                point; integers count by their value), then any injected
                currents of the same shape for ``DeltaPlusCurrent``.

        Returns:
            ``B x F x Hout x Wout`` in the weight dtype.
        """
        self._check_inputs(inputs)
        if not self._compact:
            return self._generic_forward(inputs, kwargs)
        delay = self.delay if self.delayedby else None
        return _dispatch.step(
            self.synapse, inputs, self.weight, self.bias, delay, self.geometry
        )

    def forward_sequence(
        self, inputs: torch.Tensor, *injected: torch.Tensor
    ) -> torch.Tensor:
        """Runs ``T`` simulation steps in one call.

        Continues from the present state and leaves it as ``T`` calls of
        :meth:`forward` would. Differentiable through the whole sequence: with
        respect to floating-point inputs, the injected currents, ``weight``,
        ``bias`` and ``delay`` (see :func:`delayconv.reference.gradient_taps`
        for how a delay's gradient is defined).

        Args:
            inputs: ``T x B x C x H x W`` input.
            *injected: injected currents shaped like ``inputs``
                (``DeltaPlusCurrent`` only; summed).

        Returns:
            ``T x B x F x Hout x Wout`` in the weight dtype.
        """
        expected = (inputs.shape[0], *self.batched_inshape) if _is_5d(inputs) else None
        if expected is None:
            raise ValueError(
                "'inputs' must be 5-D, T x B x C x H x W with B x C x H x W = "
                f"{self.batched_inshape}, got {_describe(inputs)}"
            )
        self._check_tensor("inputs", inputs, expected, floating=False)
        for index, extra in enumerate(injected, start=1):
            self._check_tensor(
                f"injected current {index}", extra, expected, floating=True
            )
        if not self._compact:
            raise TypeError(
                "forward_sequence needs a delayconv synapse model; "
                f"{type(self.synapse).__name__} runs one step at a time with forward()"
            )

        total = None
        for extra in injected:
            total = extra if total is None else total + extra
        delay = self.delay if self.delayedby else None
        return _dispatch.sequence(
            self.synapse, inputs, total, self.weight, self.bias, delay, self.geometry
        )

    @property
    def _compact(self) -> bool:
        # A delayconv synapse made through the common protocol (by a foreign
        # constructor) holds the unfolded shape and takes the generic path.
        synapse = self.synapse
        return isinstance(synapse, Synapse) and synapse.layout == self.geometry

    def _check_inputs(self, inputs: tuple[torch.Tensor, ...]) -> None:
        if not inputs:
            raise TypeError(
                f"forward() takes an input of shape {self.batched_inshape}, got none"
            )
        for index, value in enumerate(inputs):
            name = "input" if index == 0 else f"injected current {index}"
            self._check_tensor(name, value, self.batched_inshape, floating=index > 0)

    def _check_tensor(
        self, name: str, value: Any, expected: tuple[int, ...], *, floating: bool
    ) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"'{name}' must be a torch.Tensor, got {type(value).__name__}"
            )
        if tuple(value.shape) != tuple(expected):
            raise ValueError(_shape_message(name, value, tuple(expected)))
        device = self.weight.device
        if value.device != device:
            raise ValueError(
                f"'{name}' must be on the layer's device {device}, got a tensor "
                f"on {value.device}; move one of them with .to()"
            )
        if value.is_complex() or (floating and not value.is_floating_point()):
            kinds = "floating point" if floating else "bool, integer or floating point"
            raise TypeError(f"'{name}' must be {kinds}, got {value.dtype}")

    def _generic_forward(
        self, inputs: tuple[torch.Tensor, ...], kwargs: dict[str, Any]
    ) -> torch.Tensor:
        # Foreign synapses keep the unfolded state, as the reference does.
        current = self.synapse(*(self.like_synaptic(x) for x in inputs), **kwargs)
        kernel = self.weight.reshape(self.filters, -1)
        if self.delayedby:
            out = torch.einsum("fn,bnlf->bfl", kernel, self.syncurrent)
        else:
            out = torch.matmul(kernel, current)
        out = out.reshape(-1, *self.outshape)
        if self.biased:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def _check_output(geometry: ConvGeometry) -> None:
    if geometry.out_height < 1 or geometry.out_width < 1:
        raise ValueError(
            "the output would be empty "
            f"({geometry.out_height} x {geometry.out_width}): "
            f"an input of {geometry.height} x {geometry.width} with padding "
            f"{geometry.padding} is smaller than the dilated kernel {geometry.kernel} "
            f"(dilation {geometry.dilation})"
        )


def _is_5d(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 5


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dim()}-D shape {tuple(value.shape)}"
    return type(value).__name__


def _shape_message(name: str, value: torch.Tensor, expected: tuple[int, ...]) -> str:
    got = tuple(value.shape)
    layout = "T x B x C x H x W" if len(expected) == 5 else "B x C x H x W"
    if len(got) != len(expected):
        return (
            f"'{name}' must be {len(expected)}-D, {layout} = {expected}, got "
            f"{len(got)}-D shape {got}"
        )
    batch = len(expected) - 4
    if got[batch] != expected[batch] and got[batch + 1 :] == expected[batch + 1 :]:
        return (
            f"'{name}' has batch {got[batch]} but the layer's batch size is "
            f"{expected[batch]}; "
            f"set batchsz first (it clears the synaptic state)"
        )
    return f"'{name}' must have shape {expected}, got {got}"


def _warn_generic(synapse: nn.Module) -> None:
    name = type(synapse).__name__
    if name not in _warned_generic:
        _warned_generic.add(name)
        warnings.warn(
            f"{name} is not a delayconv synapse: Conv2D keeps its state unfolded and "
            "computes with unfold and einsum, which is slow and memory-hungry with "
            "delays. Use a delayconv synapse model for the compact, fused path.",
            stacklevel=3,
        )

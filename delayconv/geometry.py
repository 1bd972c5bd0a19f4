"""Convolution geometry and the unfolded (receptive-field) view of compact data.

Shape legend used across the package:

* ``B`` batch, ``C`` input channels, ``H x W`` input height and width;
* ``F`` filters, ``kH x kW`` kernel, ``Hout x Wout`` output height and width;
* ``N = C * kH * kW`` synapses per receptive field, ``L = Hout * Wout`` fields;
* ``R`` observations held by a synapse ring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one 2-D convolution, with helpers to unfold and fold its input."""

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def out_height(self) -> int:
        return _out_size(self.height, 0, self)

    @property
    def out_width(self) -> int:
        return _out_size(self.width, 1, self)

    @property
    def fields(self) -> int:
        """``L``: the number of receptive fields (output positions)."""
        return self.out_height * self.out_width

    @property
    def field_size(self) -> int:
        """``N``: the number of synapses in one receptive field."""
        return self.channels * math.prod(self.kernel)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """Shape of one observation of compact state, excluding the batch."""
        return (self.channels, self.height, self.width)

    @property
    def synaptic_shape(self) -> tuple[int, int]:
        """Shape of the unfolded synapses, ``(N, L)``, excluding the batch."""
        return (self.field_size, self.fields)

    def unfold(
        self, data: torch.Tensor, work_dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Unfolds ``... x C x H x W`` data into ``... x N x L`` receptive fields.

        Non-floating data is unfolded as ``work_dtype`` and cast back, since
        ``unfold`` is only implemented for floating point.
        """
        lead = data.shape[:-3]
        flat = data.reshape(-1, *data.shape[-3:])
        work = flat if flat.is_floating_point() else flat.to(work_dtype)
        cols = F.unfold(
            work,
            self.kernel,
            dilation=self.dilation,
            padding=self.padding,
            stride=self.stride,
        )
        return cols.to(data.dtype).reshape(*lead, *self.synaptic_shape)

    def fold_mean(self, data: torch.Tensor) -> torch.Tensor:
        """Folds ``B x N x L`` data back to ``B x C x H x W`` as a mean of copies.

        Every pixel takes the mean of the receptive-field copies that hold it; a
        pixel that no receptive field covers reads 0.
        """
        kwargs = {
            "output_size": (self.height, self.width),
            "kernel_size": self.kernel,
            "dilation": self.dilation,
            "padding": self.padding,
            "stride": self.stride,
        }
        total = F.fold(data, **kwargs)
        copies = F.fold(torch.ones_like(data), **kwargs)
        return torch.where(copies > 0, total / copies.clamp(min=1), 0.0)


def _out_size(size: int, dim: int, geometry: ConvGeometry) -> int:
    span = geometry.dilation[dim] * (geometry.kernel[dim] - 1) + 1
    reach = size + 2 * geometry.padding[dim] - span
    return math.floor(reach / geometry.stride[dim] + 1)

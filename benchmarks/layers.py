"""Layer configurations: the named ones of the issues, and user-given shapes.

A layer is one spiking convolution, stride 1 and dilation 1, whose delays are
counted in whole simulation steps (``max_delay`` None means no delays at all).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """Sizes of a benchmarked layer.

    Attributes:
        name: label in tables and plots.
        batch: ``B``.
        channels: ``C``.
        height: ``H``.
        width: ``W``.
        filters: ``F``.
        kernel: square kernel size ``k``.
        padding: zero padding on each side.
        max_delay: maximum delay in steps, or None for a layer without delays.
    """

    name: str
    batch: int
    channels: int
    height: int
    width: int
    filters: int
    kernel: int
    padding: int
    max_delay: int | None

    @property
    def out_height(self) -> int:
        return self.height + 2 * self.padding - self.kernel + 1

    @property
    def out_width(self) -> int:
        return self.width + 2 * self.padding - self.kernel + 1

    @property
    def records(self) -> int:
        """``R``: ring slots that the delays need (1 without delays)."""
        return (self.max_delay or 0) + 1

    def with_delay(self, max_delay: int | None) -> Layer:
        """The same layer at another maximum delay, renamed to say so."""
        base = re.sub(r"-d\d+$", "", self.name)
        name = base if max_delay is None else f"{base}-d{max_delay}"
        return dataclasses.replace(self, name=name, max_delay=max_delay)

    def with_batch(self, batch: int) -> Layer:
        return dataclasses.replace(self, batch=batch)

    def describe(self) -> str:
        """Sizes in one line: ``B32 C2 34x34 F32 k5 p0 D10``."""
        delay = "none" if self.max_delay is None else str(self.max_delay)
        return (
            f"B{self.batch} C{self.channels} {self.height}x{self.width} "
            f"F{self.filters} k{self.kernel} p{self.padding} D{delay}"
        )


# The CPU issue's layers (an N-MNIST-sized input layer and a wider hidden layer,
# each without and with delays) and the CUDA issue's large layer.
NAMED = {
    layer.name: layer
    for layer in (
        Layer("nmnist", 32, 2, 34, 34, 32, 5, 0, None),
        Layer("nmnist-d10", 32, 2, 34, 34, 32, 5, 0, 10),
        Layer("hidden", 16, 32, 32, 32, 64, 3, 1, None),
        Layer("hidden-d5", 16, 32, 32, 32, 64, 3, 1, 5),
        Layer("large-d16", 64, 64, 64, 64, 128, 3, 1, 16),
        # Small enough for the smoke run of --quick.
        Layer("tiny-d3", 2, 2, 12, 12, 4, 3, 1, 3),
    )
}

CPU_DEFAULT = ("nmnist", "nmnist-d10", "hidden", "hidden-d5")
CUDA_DEFAULT = (*CPU_DEFAULT, "large-d16")
SHAPE_FORMAT = "B,C,HxW,F,kernel,padding[,max_delay]"


def parse_shape(text: str) -> Layer:
    """Reads a user-given layer, such as ``8,16,28x28,32,3,1,4``.

    Args:
        text: ``B,C,HxW,F,kernel,padding[,max_delay]``; ``H`` alone stands for
            a square input, and a missing or ``none`` max delay means no delays.

    Raises:
        ValueError: if the text does not follow that format or a size is out of
            range.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (6, 7):
        raise ValueError(f"a shape must read {SHAPE_FORMAT}, got {text!r}")
    height, _, width = parts[2].lower().partition("x")
    try:
        sizes = [int(p) for p in (parts[0], parts[1], height, width or height)]
        filters, kernel, padding = (int(p) for p in parts[3:6])
        delay = parts[6] if len(parts) == 7 else "none"
        max_delay = None if delay.lower() == "none" else int(delay)
    except ValueError:
        raise ValueError(
            f"a shape must read {SHAPE_FORMAT} with integers, got {text!r}"
        ) from None
    layer = Layer(
        f"shape-{text.replace(',', '_')}", *sizes, filters, kernel, padding, max_delay
    )
    _check(layer, text)
    return layer


def _check(layer: Layer, text: str) -> None:
    positive = (
        layer.batch,
        layer.channels,
        layer.height,
        layer.width,
        layer.filters,
        layer.kernel,
    )
    if min(positive) < 1 or layer.padding < 0:
        raise ValueError(f"sizes must be positive and padding >= 0, got {text!r}")
    if layer.max_delay is not None and layer.max_delay < 0:
        raise ValueError(f"the max delay must be >= 0 steps, got {text!r}")
    if layer.out_height < 1 or layer.out_width < 1:
        raise ValueError(f"the kernel is larger than the padded input in {text!r}")


def resolve(names: list[str]) -> list[Layer]:
    """Looks up named layers, with a message listing the names on a typo."""
    unknown = [n for n in names if n not in NAMED]
    if unknown:
        raise ValueError(
            f"unknown layer {unknown[0]!r}; named layers are {', '.join(NAMED)}"
        )
    return [NAMED[n] for n in names]

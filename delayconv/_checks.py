"""Argument checks whose messages name the argument, the rule and the value.

Every public constructor and setter validates through these helpers so that a
caller's mistake raises before any state changes, and always in the same words.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


def integer(name: str, value: Any, *, minimum: int) -> int:
    """Returns ``value`` if it is an int of at least ``minimum``.

    bool is refused although it subclasses int: ``kernel=True`` is a mistake,
    never a size.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int, got {_show(value)}")
    if value < minimum:
        rule = "positive" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"'{name}' must be {rule}, got {value}")
    return value


def pair(name: str, value: Any, *, minimum: int) -> tuple[int, int]:
    """Returns an int or a length-2 tuple or list of ints as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"'{name}' must be an int or a pair of ints, got a sequence of "
                f"length {len(value)}: {value!r}"
            )
        return (
            integer(f"{name}[0]", value[0], minimum=minimum),
            integer(f"{name}[1]", value[1], minimum=minimum),
        )
    single = integer(name, value, minimum=minimum)
    return (single, single)


def real(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    nonzero: bool = False,
) -> float:
    """Returns ``value`` as a finite float, refusing bools and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"'{name}' must be a real number, got {_show(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"'{name}' must be finite, got {number}")
    if positive and number <= 0:
        raise ValueError(f"'{name}' must be positive, got {number}")
    if nonnegative and number < 0:
        raise ValueError(f"'{name}' must be non-negative, got {number}")
    if nonzero and number == 0:
        raise ValueError(f"'{name}' must be nonzero, got {number}")
    return number


def optional_real(name: str, value: Any) -> float | None:
    """Returns ``None`` or ``value`` as a finite float."""
    return None if value is None else real(name, value)


def optional_bool(name: str, value: Any) -> bool | None:
    """Returns ``None`` or ``value`` as a bool, accepting only bools and 0/1."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"'{name}' must be a bool or None, got {_show(value)}")


def optional_callable(name: str, value: Any) -> None:
    """Raises unless ``value`` is None or callable."""
    if value is not None and not callable(value):
        raise TypeError(f"'{name}' must be callable or None, got {_show(value)}")


def flag(name: str, value: Any) -> bool:
    """Returns ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"'{name}' must be a bool, got {_show(value)}")
    return value


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    """Returns ``value`` lower-cased if it names one of ``options``."""
    if not isinstance(value, str):
        raise TypeError(f"'{name}' must be a str, got {_show(value)}")
    lowered = value.lower()
    if lowered not in options:
        names = ", ".join(repr(option) for option in options)
        raise ValueError(f"'{name}' must be one of {names}, got {value!r}")
    return lowered


def tensor_like(
    name: str,
    value: Any,
    shape: tuple[int, ...],
    *,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Returns ``value`` if it is a tensor of ``shape`` (and ``device``)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {_show(value)}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"'{name}' must have shape {tuple(shape)}, got {tuple(value.shape)}"
        )
    if device is not None and value.device != device:
        raise ValueError(
            f"'{name}' must be on {device}, got a tensor on {value.device}"
        )
    return value

"""Timing of one implementation on one case: warm-up, repeats and the budget.

The protocol, in the worker process:

1. *Probe*: time the first unit from rest (or a single step, for an
   implementation whose unit is many slow steps). If that alone exceeds the
   budget, time one more unit if the first took at most twice the budget, and
   stop: the result has a single sample and says so.
2. *Prime* (step mode): run the remaining ``R - 1`` steps that fill the delay
   ring, so that every timed step is a steady-state step.
3. *Warm up*: run ``warmup`` untimed units (caches, allocator, oneDNN's
   primitive cache, cuDNN's algorithm choice).
4. *Repeat*: time ``repeats`` units, fewer if the budget runs out, but never
   fewer than ``min_repeats``.

On a GPU each unit is bracketed by CUDA events after a synchronization; on the
CPU by ``time.perf_counter``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .cases import Case
from .implementations import Runner

# Elements per chunk of a checksum: half a megabyte of float64.
CHECKSUM_CHUNK = 2**16


@dataclass(frozen=True)
class Settings:
    """How hard to measure.

    Attributes:
        warmup: untimed units after priming (at least 1).
        repeats: timed units wanted.
        min_repeats: timed units kept even when the budget is spent.
        budget_s: seconds an implementation may spend on a case, priming and
            warm-up included; a single unit beyond it is not repeated.
    """

    warmup: int = 2
    repeats: int = 10
    min_repeats: int = 3
    budget_s: float = 10.0


@dataclass
class Timing:
    """What the protocol measured."""

    status: str = "ok"
    samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checksum: list[float] | None = None
    grad_checksum: list[float] | None = None


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Runs ``fn`` once; returns its wall time in seconds and its result."""
    if device == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, result
    start_s = time.perf_counter()
    result = fn()
    return time.perf_counter() - start_s, result


def checksum(tensor: torch.Tensor | None) -> list[float] | None:
    """Sum, sum of magnitudes and a position-weighted sum, in float64.

    The weighted sum (by ``cos`` of the flat index) tells apart outputs that
    hold the same values in other places; the sum of magnitudes is the scale
    that differences are measured against. It runs in chunks, so that the
    float64 copies it makes stay far below the peak memory being measured.
    """
    if tensor is None:
        return None
    flat = tensor.detach().reshape(-1)
    sums = [0.0, 0.0, 0.0]
    for start in range(0, flat.numel(), CHECKSUM_CHUNK):
        chunk = flat[start : start + CHECKSUM_CHUNK].double()
        index = torch.arange(
            start, start + chunk.numel(), device=chunk.device, dtype=chunk.dtype
        )
        sums[0] += float(chunk.sum())
        sums[1] += float(chunk.abs().sum())
        sums[2] += float(chunk @ torch.cos(index))
    return sums


def measure(runner: Runner, case: Case, settings: Settings) -> Timing:
    """Applies the protocol of this module to a built implementation."""
    result = Timing()
    device = case.device
    spent = 0.0

    if runner.probe is not None:
        probe_s, _ = timed(runner.probe, device)
        runner.reset()
        if probe_s * case.steps > settings.budget_s:
            result.status = "skipped"
            result.notes.append(
                f"one step took {probe_s:.2f} s, so {case.steps} steps exceed the "
                f"{settings.budget_s:g} s budget"
            )
            return result
        spent += probe_s
        next_unit = 0
    else:
        # The outputs are summed up at once and let go: an output kept alive
        # here would count in the implementation's peak memory.
        record = result if case.sequence else None
        first_s, _ = timed(lambda: _run(runner, 0, record), device)
        spent += first_s
        if first_s > settings.budget_s:
            return _over_budget(result, runner, first_s, settings, device)
        next_unit = 1

    # Step mode: fill the ring, so that the timed steps read a full history.
    start_s = time.perf_counter()
    if not case.sequence:
        for index in range(next_unit, case.layer.records):
            runner.unit(index)
        next_unit = max(next_unit, case.layer.records)

    for index in range(max(settings.warmup, 1)):
        first = index == 0 and result.checksum is None
        _run(runner, next_unit + index, result if first else None)
    next_unit += max(settings.warmup, 1)
    spent += time.perf_counter() - start_s

    unit_s = spent / max(next_unit, 1)
    affordable = math.floor(max(settings.budget_s - spent, 0.0) / max(unit_s, 1e-9))
    count = min(settings.repeats, max(settings.min_repeats, affordable))
    if count < settings.repeats:
        result.notes.append(f"{count} of {settings.repeats} repeats fit the budget")
    for index in range(count):
        elapsed, _ = timed(lambda i=next_unit + index: _run(runner, i), device)
        result.samples.append(elapsed)
    return result


def _over_budget(
    result: Timing, runner: Runner, first_s: float, settings: Settings, device: str
) -> Timing:
    """One sample for a unit longer than the budget.

    The first unit ran from rest, paying for first-touch page faults and cold
    caches; where it took at most twice the budget, a second unit is timed
    instead.
    """
    result.status = "over-budget"
    budget = settings.budget_s
    if first_s > 2 * budget:
        result.samples = [first_s]
        result.notes.append(
            f"one unit took {first_s:.2f} s, over twice the {budget:g} s budget: "
            "a single sample, cold (the first unit, from rest)"
        )
        return result
    elapsed, _ = timed(lambda: _run(runner, 1), device)
    result.samples = [elapsed]
    result.notes.append(
        f"the first unit took {first_s:.2f} s, over the {budget:g} s budget: "
        "a single sample, the second unit"
    )
    return result


def _run(runner: Runner, index: int, record: Timing | None = None) -> None:
    """Runs unit ``index``, summing its outputs up into ``record`` if given."""
    out, grad = runner.unit(index)
    if record is not None:
        record.checksum = checksum(out)
        record.grad_checksum = checksum(grad)


def summarize(samples: list[float]) -> dict[str, float | int | None]:
    """Median, extremes and spread of timing samples, in seconds."""
    if not samples:
        return {"n": 0, "median_s": None, "min_s": None, "max_s": None}
    ordered = sorted(samples)
    quartiles = (
        statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    )
    return {
        "n": len(ordered),
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "iqr_s": quartiles[2] - quartiles[0],
        "mean_s": statistics.fmean(ordered),
    }

"""Derived figures, the terminal table and the JSON file of a run.

Ratios are taken within a case, between implementations measured in the same
run on the same inputs: ``x floor`` divides a median by the conv2d floor's,
``x mem`` a peak by delayconv's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .cases import Case
from .implementations import FLOOR, IMPLEMENTATIONS, ORACLE

# Relative difference of checksums beyond which two exact implementations
# are reported as disagreeing (float32 sums over many outputs).
MISMATCH = 1e-4


def useful_bytes(case: Case) -> int | None:
    """Bytes a fused implementation must move at the least, per unit.

    Per step: read the input (float32), read and write the model's recorded
    currents, write the newest spikes (1 byte each), read each ring slot the
    delays use once (spikes for a delta synapse, else currents), read the
    weights and delays, and write the output. None for the backward mode,
    whose traffic depends on what the forward pass keeps.
    """
    if case.backward:
        return None
    layer = case.layer
    pixels = layer.batch * layer.channels * layer.height * layer.width
    recorded = {"delta": 0, "delta-plus": 1, "single-exp": 1, "double-exp": 2}
    currents = recorded[case.synapse]
    slot_bytes = 1 if case.synapse == "delta" else 4 * currents
    kernel = layer.filters * layer.channels * layer.kernel**2 * 4
    output = layer.batch * layer.filters * layer.out_height * layer.out_width * 4
    step = (
        pixels * 4
        + pixels * currents * 8
        + pixels
        + pixels * slot_bytes * layer.records
        + kernel * (2 if layer.max_delay else 1)
        + output
    )
    return step * case.steps


def derive(measurements: list[dict], copy_rate_gbs: float | None) -> None:
    """Adds ratios, bandwidths and checksum agreement to each measurement."""
    by_case: dict[str, dict[str, dict]] = {}
    for m in measurements:
        by_case.setdefault(m["case"]["label"], {})[m["implementation"]] = m

    for group in by_case.values():
        floor = _median(group.get(FLOOR))
        floor_min = (group.get(FLOOR) or {}).get("min_s")
        update = _median(group.get("conv2d+update"))
        dense = _median(group.get("conv3d"))
        dc = group.get("delayconv", {}).get("peak_bytes")
        oracle = group.get(ORACLE, {})
        for name, m in group.items():
            median = _median(m)
            m["ratio_vs_floor"] = _divide(median, floor)
            # On a shared machine the fastest sample is the one least disturbed.
            m["ratio_vs_floor_of_minimums"] = _divide(m.get("min_s"), floor_min)
            m["ratio_vs_conv2d_update"] = _divide(median, update)
            m["ratio_vs_conv3d"] = _divide(median, dense)
            peak = m.get("peak_bytes")
            m["memory_vs_delayconv"] = peak / dc if peak and dc else None
            case = Case.from_json(m["case"])
            moved = useful_bytes(case)
            m["useful_bytes"] = moved
            m["bandwidth_gbs"] = moved / median / 1e9 if moved and median else None
            m["fraction_of_copy_rate"] = (
                m["bandwidth_gbs"] / copy_rate_gbs
                if m["bandwidth_gbs"] and copy_rate_gbs
                else None
            )
            exact = IMPLEMENTATIONS[name].exact(case) and name != ORACLE
            m["differs_from_reference"] = (
                _difference(m, oracle) if exact and oracle else None
            )


def _divide(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _median(m: dict | None) -> float | None:
    return None if not m else m.get("median_s")


def _difference(m: dict, oracle: dict) -> float | None:
    """Largest relative difference of the checksums (output, then gradient)."""
    worst = None
    for key in ("checksum", "grad_checksum"):
        mine, theirs = m.get(key), oracle.get(key)
        if not mine or not theirs:
            continue
        # [sum, sum of magnitudes, weighted sum]; the magnitudes are the scale.
        scale = max(theirs[1], 1e-30)
        diff = max(abs(mine[i] - theirs[i]) for i in (0, 2)) / scale
        worst = diff if worst is None else max(worst, diff)
    return worst


def _figure(value: float) -> str:
    """Three significant digits, without an exponent for large values."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else _figure(seconds * 1e3)


def _ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return _figure(value) + "x"


def _megabytes(value: int | None) -> str:
    return "-" if value is None else _figure(value / 1e6)


def _notes(m: dict) -> str:
    notes = list(m.get("notes", []))
    diff = m.get("differs_from_reference")
    if diff is not None and diff > MISMATCH:
        notes.insert(0, f"MISMATCH: checksum differs from the reference by {diff:.2g}")
    return "; ".join(notes)


def table(meta: dict, measurements: list[dict]) -> str:
    """The run as a plain-text table, one block of rows per case."""
    machine = meta["machine"]
    lines = [
        f"delayconv benchmarks, {meta['date']}",
        f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores, "
        f"{machine['memory_gb']} GB; load average at start "
        f"{machine['load_average'][0]}",
        f"device {meta['device']}, torch {meta['torch']}, {meta['threads']} threads, "
        f"commit {(meta.get('git_commit') or '?')[:10]}"
        + (" (with local changes)" if meta.get("git_dirty") else ""),
        "median and min-max of the timed units; 'x floor', 'x c2d+upd', 'x conv3d' = "
        "median / that implementation's median on the same case;",
        "'min x floor' = fastest sample / the floor's fastest sample;",
        "'peak' = peak memory growth of the implementation's own process; "
        "'x mem' = peak / delayconv's peak; n = timed units",
    ]
    if meta.get("copy_rate_gbs"):
        lines.append(f"copy rate (dst.copy_(src)): {meta['copy_rate_gbs']:.1f} GB/s")
    gpu = meta["device"] == "cuda"
    header = ["implementation", "backend", "median ms", "min-max ms", "x floor"]
    header += ["min x floor", "x c2d+upd", "x conv3d"]
    header += ["peak MB", "x mem", "n"] + (["GB/s", "% copy"] if gpu else [])
    header.append("notes")

    cases: dict[str, list[dict]] = {}
    for m in measurements:
        cases.setdefault(m["case"]["label"], []).append(m)
    for label, rows in cases.items():
        case = rows[0]["case"]
        layer = case["layer"]
        delay = "none" if layer["max_delay"] is None else layer["max_delay"]
        lines += [
            "",
            f"== {label}: B{layer['batch']} C{layer['channels']} "
            f"{layer['height']}x{layer['width']} F{layer['filters']} "
            f"k{layer['kernel']} p{layer['padding']}, max delay {delay} steps, "
            f"density {case['density']}",
        ]
        cells = [header]
        for m in rows:
            spread = (
                "-"
                if m.get("min_s") is None
                else f"{_ms(m['min_s'])}-{_ms(m['max_s'])}"
            )
            row = [
                m["implementation"],
                m.get("backend") or "-",
                _ms(m.get("median_s")),
                spread,
                _ratio(m.get("ratio_vs_floor")),
                _ratio(m.get("ratio_vs_floor_of_minimums")),
                _ratio(m.get("ratio_vs_conv2d_update")),
                _ratio(m.get("ratio_vs_conv3d")),
                _megabytes(m.get("peak_bytes")),
                _ratio(m.get("memory_vs_delayconv")),
                str(m.get("n", 0)),
            ]
            if gpu:
                bandwidth = m.get("bandwidth_gbs")
                fraction = m.get("fraction_of_copy_rate")
                row += [
                    "-" if bandwidth is None else f"{bandwidth:.3g}",
                    "-" if fraction is None else f"{100 * fraction:.0f}%",
                ]
            status = m["status"]
            note = _notes(m)
            row.append(note if status == "ok" else f"[{status}] {note}".strip())
            cells.append(row)
        lines += _align(cells)
    return "\n".join(lines) + "\n"


def _align(cells: list[list[str]]) -> list[str]:
    # The last column (notes) is left ragged.
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]) - 1)]
    out = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        out.append("  ".join([*padded, row[-1]]).rstrip())
    return out


def write_json(path: Path, meta: dict, measurements: list[dict]) -> None:
    record: dict[str, Any] = {"schema": 1, "meta": meta, "measurements": measurements}
    path.write_text(json.dumps(record, indent=1) + "\n")

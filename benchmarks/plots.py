"""PNG plots of the sweeps: time and memory against max delay, time against
batch size, one line per implementation."""

from __future__ import annotations

from pathlib import Path

PLOTS = {
    "time_vs_delay.png": ("delay-sweep", "max_delay", "median_s"),
    "time_vs_batch.png": ("batch-sweep", "batch", "median_s"),
    "memory_vs_delay.png": ("delay-sweep", "max_delay", "peak_bytes"),
}
_LABELS = {
    "max_delay": "max delay (steps)",
    "batch": "batch size",
    "median_s": "median time per step (ms)",
    "peak_bytes": "peak memory growth (MB)",
}


def _series(measurements: list[dict], group: str, x_key: str, y_key: str):
    """Points per implementation: (x, y, low, high), sorted by x."""
    lines: dict[str, list[tuple]] = {}
    for m in measurements:
        # Log axes: a zero (a peak below one page) cannot be drawn.
        if group not in m["case"]["groups"] or not m.get(y_key):
            continue
        x = m["case"]["layer"][x_key]
        if y_key == "median_s":
            scale = 1e3
            low, high = m["min_s"] * scale, m["max_s"] * scale
        else:
            scale = 1e-6
            low = high = m[y_key] * scale
        lines.setdefault(m["implementation"], []).append(
            (x, m[y_key] * scale, low, high)
        )
    return {name: sorted(points) for name, points in lines.items()}


def write_plots(directory: Path, meta: dict, measurements: list[dict]) -> list[Path]:
    """Writes the plots that the run has points for; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for filename, (group, x_key, y_key) in PLOTS.items():
        series = _series(measurements, group, x_key, y_key)
        if not series:
            continue
        sample = next(m for m in measurements if group in m["case"]["groups"])
        case = sample["case"]
        figure, axes = plt.subplots(figsize=(8.5, 4.5), dpi=110)
        for name, points in series.items():
            xs, ys, lows, highs = zip(*points, strict=True)
            errors = [
                [y - lo for y, lo in zip(ys, lows, strict=True)],
                [hi - y for y, hi in zip(ys, highs, strict=True)],
            ]
            axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=name)
        axes.set_yscale("log")
        if x_key == "batch":
            axes.set_xscale("log", base=2)
        axes.set_xlabel(_LABELS[x_key])
        axes.set_ylabel(_LABELS[y_key])
        layer = case["layer"]
        fixed = (
            f"B{layer['batch']}"
            if x_key == "max_delay"
            else f"max delay {layer['max_delay']}"
        )
        axes.set_title(
            f"{layer['channels']}x{layer['height']}x{layer['width']} -> "
            f"{layer['filters']}, k{layer['kernel']}, {fixed}, {case['synapse']}, "
            f"{case['mode']}\n{meta['device']}, {meta['threads']} threads, "
            f"{meta['date'][:10]}, {meta['machine']['cpu'][:40]}",
            fontsize=9,
        )
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        figure.tight_layout()
        path = directory / filename
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written

"""One benchmark run: every task in its worker, with a progress bar, then the
table, the JSON file and the plots."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tqdm import tqdm

from . import machine
from .cases import Case
from .implementations import IMPLEMENTATIONS, inferno_bytes
from .plots import write_plots
from .report import derive, table, write_json
from .timing import Settings, summarize
from .workers import run_task

COPY_BYTES = {"cpu": 256 * 2**20, "cuda": 2**30}


def _options(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def memory_limit(args: argparse.Namespace) -> float:
    """Bytes above which inferno is not started (see ``--memory-limit``)."""
    if args.memory_limit is not None:
        return args.memory_limit * 1e9
    if args.device == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0] / 2
    import psutil

    return psutil.virtual_memory().available / 2


def _skip_reason(case: Case, name: str, limit: float) -> str | None:
    reason = IMPLEMENTATIONS[name].unsupported(case)
    if reason is None and name == "inferno" and inferno_bytes(case) > limit:
        reason = (
            f"estimated peak {inferno_bytes(case) / 1e9:.1f} GB exceeds the "
            f"{limit / 1e9:.1f} GB memory limit (--memory-limit)"
        )
    return reason


def _copy_rate(device: str, threads: int, quick: bool, timeout: float) -> dict:
    size = COPY_BYTES[device] // (16 if quick else 1)
    task = {"kind": "copy", "device": device, "bytes": size, "threads": threads}
    return run_task(task, timeout)


def run_all(
    args: argparse.Namespace, cases: list[Case], names: list[str], threads: int
) -> list[dict]:
    """Runs every (case, implementation) pair; writes the outputs to ``args.out``."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = machine.describe(args.device, threads)
    meta["options"] = _options(args)
    settings = Settings(
        warmup=args.warmup,
        repeats=args.repeats,
        min_repeats=min(3, args.repeats),
        budget_s=args.budget,
    )
    meta["settings"] = dataclasses.asdict(settings)
    limit = memory_limit(args)

    copy = _copy_rate(args.device, threads, args.quick, args.timeout)
    meta["copy"] = copy
    meta["copy_rate_gbs"] = copy.get("rate_gbs")

    tasks = [
        (case, name)
        for case in cases
        for name in names
        if case.mode in IMPLEMENTATIONS[name].modes
    ]
    measurements: list[dict] = []
    with tqdm(total=len(tasks), unit="task", dynamic_ncols=True) as bar:
        for case, name in tasks:
            bar.set_description(f"{case.label} | {name}")
            reason = _skip_reason(case, name, limit)
            if reason is not None:
                result = {"status": "skipped", "notes": [reason], **summarize([])}
            else:
                task = {
                    "kind": "case",
                    "case": case.to_json(),
                    "implementation": name,
                    "settings": dataclasses.asdict(settings),
                    "threads": threads,
                    "tf32": args.tf32,
                }
                result = run_task(task, args.timeout)
            measurements.append(
                {"case": case.to_json(), "implementation": name, **result}
            )
            bar.write(_line(case, name, result))
            bar.update()
            # Written as it goes, so that an interrupted run keeps its figures.
            write_json(out / "results.json", meta, measurements)

    _report(out, meta, measurements)
    return measurements


def _report(out: Path, meta: dict, measurements: list[dict]) -> None:
    derive(measurements, meta["copy_rate_gbs"])
    text = table(meta, measurements)
    write_json(out / "results.json", meta, measurements)
    (out / "table.txt").write_text(text)
    print(text)
    for path in write_plots(out, meta, measurements):
        print(f"wrote {path}")


def report_again(results: Path) -> None:
    """Writes the table and plots of an earlier run again from its JSON file."""
    record = json.loads(results.read_text())
    _report(results.parent, record["meta"], record["measurements"])


def _line(case: Case, name: str, result: dict) -> str:
    median = result.get("median_s")
    figure = "" if median is None else f"{median * 1e3:10.3f} ms"
    peak = result.get("peak_bytes")
    memory = "" if peak is None else f"{peak / 1e6:9.1f} MB"
    status = "" if result["status"] == "ok" else result["status"]
    return f"{case.label:42} {name:16} {figure:>13} {memory:>12} {status}"

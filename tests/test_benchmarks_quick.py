"""Smoke test of the benchmark suite: ``python -m benchmarks --quick``.

It checks that a run completes and writes what it promises, never how fast
anything was: timings on a shared CI machine mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
PLOTS = ("time_vs_delay.png", "time_vs_batch.png", "memory_vs_delay.png")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_quick_run_writes_json_with_every_measurement(quick_run: Path):
    record = json.loads((quick_run / "results.json").read_text())
    meta = record["meta"]
    for key in ("date", "machine", "torch", "threads", "git_commit", "kernels"):
        assert key in meta
    assert meta["copy_rate_gbs"] > 0

    measured = [m for m in record["measurements"] if m["status"] == "ok"]
    assert {m["implementation"] for m in measured} >= {
        "delayconv",
        "reference",
        "conv2d",
        "conv3d",
    }
    assert {m["case"]["mode"] for m in measured} == {"step", "seq-fwdbwd"}
    for m in measured:
        assert m["n"] >= 1 and m["median_s"] > 0
        assert m["min_s"] <= m["median_s"] <= m["max_s"]
        assert m["peak_bytes"] >= 0 and m["threads"] >= 1
        assert m["backend"] in ("compiled", "reference", "torch")


def test_quick_run_implementations_agree(quick_run: Path):
    record = json.loads((quick_run / "results.json").read_text())
    for m in record["measurements"]:
        diff = m.get("differs_from_reference")
        assert diff is None or diff < 1e-4, (m["case"]["label"], m["implementation"])


def test_quick_run_writes_table_and_plots(quick_run: Path):
    assert "delayconv" in (quick_run / "table.txt").read_text()
    for name in PLOTS:
        assert (quick_run / name).read_bytes().startswith(b"\x89PNG")

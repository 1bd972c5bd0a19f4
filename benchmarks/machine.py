"""What a run was measured on: machine, software versions and git commit."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

REPOSITORY = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def kernels() -> dict[str, bool]:
    """Which compiled delayconv operators this build registered, per device."""
    from delayconv import _ops

    return {
        f"{device}:{op}": _ops.has_kernel(device, op)
        for device in ("cpu", "cuda")
        for op in ("step_", "sequence", "sequence_backward")
    }


def describe(device: str, threads: int) -> dict[str, Any]:
    """The run's metadata for the JSON and the table's header."""
    import psutil

    memory = psutil.virtual_memory()
    status = _git("status", "--porcelain", "--untracked-files=no")
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "machine": {
            "hostname": platform.node(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "memory_gb": round(memory.total / 1e9, 1),
            "available_memory_gb": round(memory.available / 1e9, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "delayconv": _version("delayconv"),
        "inferno_ai": _version("inferno-ai"),
        "kernels": kernels(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "device": device,
        "threads": threads,
    }
    if device == "cuda" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        record["gpu"] = {
            "name": properties.name,
            "memory_gb": round(properties.total_memory / 1e9, 1),
            "capability": f"{properties.major}.{properties.minor}",
        }
    return record

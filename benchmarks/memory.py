"""Peak memory of one implementation, measured inside its own worker process.

CPU: the growth of the resident set's high-water mark over the process's
resident set at the start of the measurement. On Linux the high-water mark is
reset first (``/proc/self/clear_refs``), so that whatever the process touched
before, imports included, does not count; elsewhere the peak is
``getrusage``'s, which cannot be reset, and the figure is the growth of that
peak.

The figure includes what the implementation's allocations cost the process:
its tensors, library scratch space and the allocator's slack. The harness
keeps no output alive while it measures.

GPU: ``torch.cuda.max_memory_allocated`` over the allocation at the start:
tensors only, not the CUDA context or cuDNN's workspace outside the caching
allocator.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Measures the peak memory that a block of work adds.

    Call :meth:`start` just before the work and :meth:`stop` after it.
    """

    def __init__(self, device: str):
        self.device = device
        self.method = ""
        self.baseline = 0

    def start(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
            self.method = "cuda max_memory_allocated"
            return
        try:
            _CLEAR_REFS.write_text("5")
            rss = _status_bytes("VmRSS")
            if rss is not None:
                self.baseline = rss
                self.method = "VmHWM growth over VmRSS (peak reset)"
                return
        except OSError:
            pass
        self.baseline = _maxrss_bytes()
        self.method = "ru_maxrss growth"

    def stop(self) -> int:
        """Bytes of the peak above the start (never negative)."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.method.startswith("VmHWM"):
            peak = _status_bytes("VmHWM") or 0
        else:
            peak = _maxrss_bytes()
        return max(peak - self.baseline, 0)

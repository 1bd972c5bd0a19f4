"""The worker side: measures one (case, implementation) pair in its own process.

The parent forks workers from a server process that has imported this module
(and so torch and delayconv) once; a worker's peak memory is then its own, and
no implementation inherits another's heap.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import time
import traceback
import warnings
from typing import Any

import torch

import delayconv  # noqa: F401  (imported once in the fork server)

from .cases import Case
from .implementations import IMPLEMENTATIONS
from .inputs import make_inputs
from .memory import PeakMemory
from .timing import Settings, checksum, measure, summarize, timed


def child_main(connection, task: dict) -> None:
    """Runs ``task`` and sends its result back through ``connection``."""
    _steady_allocator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.set_num_threads(task["threads"])
            # Full float32 on the GPU, as delayconv computes: TF32 convolutions
            # would be faster and less exact than the layers they stand in for.
            torch.backends.cudnn.allow_tf32 = task.get("tf32", False)
            torch.backends.cuda.matmul.allow_tf32 = task.get("tf32", False)
            if task["kind"] == "copy":
                result = copy_rate(task["device"], task["bytes"])
            else:
                result = run_case(task)
        except Exception as error:  # reported, not raised: the run goes on
            result = {"status": "failed", "notes": [_describe(error)]}
    result["warnings"] = sorted({str(w.message) for w in caught})
    result["threads"] = torch.get_num_threads()
    result["interop_threads"] = torch.get_num_interop_threads()
    connection.send(result)
    connection.close()


def run_case(task: dict) -> dict[str, Any]:
    """Builds one implementation, then times it and measures its peak memory."""
    case = Case.from_json(task["case"])
    impl = IMPLEMENTATIONS[task["implementation"]]
    settings = Settings(**task["settings"])
    inputs = make_inputs(case)
    if case.backward:
        inputs.frames.requires_grad_(True)

    _warm_up(impl, case, inputs)
    gc.collect()
    _release_free_memory()

    memory = PeakMemory(case.device)
    memory.start()
    build_s, runner = timed(lambda: impl.build(case, inputs), case.device)
    timing = measure(runner, case, settings)
    peak = memory.stop()

    return {
        "status": timing.status,
        "notes": timing.notes,
        "samples_s": timing.samples,
        **summarize(timing.samples),
        "build_s": build_s,
        "peak_bytes": peak,
        "memory_method": memory.method,
        "backend": runner.backend,
        "state_bytes": runner.state_bytes,
        "checksum": timing.checksum,
        "grad_checksum": timing.grad_checksum,
    }


def _warm_up(impl, case: Case, inputs) -> None:
    """Runs one unit of a separate instance, then frees it.

    This faults in the code and the per-shape library state (oneDNN's kernels
    for this convolution, the CUDA context) that the measured run would
    otherwise count as its own memory. A step warms up at full size: a few
    megabytes of that state would swamp delayconv's own. The sequence modes and
    inferno warm up on a batch of one: their units take seconds, and their own
    memory, hundreds of megabytes or more, dwarfs that state.
    """
    if case.sequence or impl.name == "inferno":
        case = case.smaller()
        inputs = make_inputs(case)
    runner = impl.build(case, inputs)
    # Through the same helpers as the measured run, whose first use faults in
    # code pages too.
    _, (out, grad) = timed(functools.partial(runner.unit, 0), case.device)
    checksum(out)
    checksum(grad)


def _steady_allocator() -> None:
    """Makes glibc's allocator behave as in a long-running training process.

    By default glibc serves a large allocation with a fresh mapping and returns
    it on free, until frees of large blocks have raised its thresholds; until
    then every step pays page faults (and the zeroing of each page) for its
    outputs and temporaries. In one measured case that made a convolution five
    times slower than in a process that had run a while. Fixed thresholds put
    every implementation in the warmed-up regime from the start. (Peak memory
    is unaffected: it is the resident high-water mark either way.)
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)


def _release_free_memory() -> None:
    # glibc keeps freed heap pages resident; returning them makes the baseline
    # what the process holds, not what it once held.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def copy_rate(device: str, size: int) -> dict[str, Any]:
    """The device's copy rate: ``dst.copy_(src)`` of ``size`` bytes, read and
    written, in GB/s (1e9 bytes)."""
    source = torch.ones(size // 4, device=device)
    target = torch.empty_like(source)
    for _ in range(2):
        target.copy_(source)
    samples = []
    deadline = time.perf_counter() + 5.0
    while len(samples) < 10 and time.perf_counter() < deadline:
        elapsed, _ = timed(lambda: target.copy_(source), device)
        samples.append(elapsed)
    stats = summarize(samples)
    return {
        "status": "ok",
        "notes": [],
        "bytes": size,
        "samples_s": samples,
        **stats,
        "rate_gbs": 2 * size / stats["median_s"] / 1e9,
    }


def _describe(error: Exception) -> str:
    last = traceback.extract_tb(error.__traceback__)[-1:]
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}{where}"

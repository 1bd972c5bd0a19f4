"""``--profile``: a torch.profiler breakdown of one case, in this process.

Each implementation is built and brought to its steady state as the timing
protocol does (ring filled, one warm-up unit), then a few units run under the
profiler, whose table of operators by self time is printed.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from .cases import Case
from .implementations import IMPLEMENTATIONS
from .inputs import make_inputs

UNITS = 3
ROWS = 12


def profile_case(case: Case, names: list[str], threads: int) -> None:
    """Prints the profile of ``case`` for each implementation that can run it.

    inferno is left out: a profile of its seconds-long steps would take
    minutes and shows one dense gather.
    """
    torch.set_num_threads(threads)
    print(f"profile of {case.label}: {case.layer.describe()}, {threads} threads")
    inputs = make_inputs(case)
    if case.backward:
        inputs.frames.requires_grad_(True)
    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if case.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"

    for name in names:
        impl = IMPLEMENTATIONS[name]
        reason = impl.unsupported(case)
        if name == "inferno" or reason is not None:
            print(f"\n== {name}: not profiled ({reason or 'too slow to profile'})")
            continue
        runner = impl.build(case, inputs)
        ready = case.layer.records if not case.sequence else 0
        for index in range(ready + 1):
            runner.unit(index)
        with profile(activities=activities) as prof:
            for index in range(UNITS):
                runner.unit(ready + 1 + index)
            if case.device == "cuda":
                torch.cuda.synchronize()
        print(f"\n== {name} (backend {runner.backend}), {UNITS} units")
        print(prof.key_averages().table(sort_by=sort, row_limit=ROWS))

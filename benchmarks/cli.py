"""Command line of ``python -m benchmarks``: plan, run, report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import layers, models
from .cases import MODES, Case, PlanSpec, plan
from .implementations import FLOOR, IMPLEMENTATIONS

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "tmp"
ORDER = (
    "conv2d",
    "conv2d+update",
    "delayconv",
    "reference",
    "delayconv-steps",
    "conv3d",
    "inferno",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Times delayconv's Conv2D against its pure-PyTorch reference, inferno's "
            "Conv2D, the conv2d floor and a dense conv3d, on the same inputs, and "
            "writes a table, a JSON file of every measurement and plots."
        ),
    )
    _cases(p.add_argument_group("what to measure"))
    _sweeps(p.add_argument_group("sweeps, for the plots"))
    _measuring(p.add_argument_group("how to measure"))
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output folder (default: benchmarks/results/tmp)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of under a minute on a tiny layer, without inferno",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS",
        help="measure nothing: write the table and plots of an earlier run's "
        "results.json again, next to it",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="print a torch.profiler breakdown of the first planned case (pick "
        "it with --layer, --synapse, --mode) instead of timing",
    )
    return p


def _cases(g) -> None:
    named = ", ".join(f"{n} ({lay.describe()})" for n, lay in layers.NAMED.items())
    known = ", ".join(models.NAMES)
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    g.add_argument(
        "--mode",
        nargs="+",
        choices=MODES,
        default=["step", "seq-fwdbwd"],
        metavar="MODE",
        help="step: one step; seq-fwd: T steps forward; seq-fwdbwd: T steps "
        "forward and backward; the sequence modes run on delayed layers only "
        "(default: step seq-fwdbwd)",
    )
    g.add_argument(
        "--layer",
        nargs="+",
        metavar="NAME",
        help=f"named layers: {named} (default: the first four; on cuda also large-d16)",
    )
    g.add_argument(
        "--shape",
        nargs="+",
        default=[],
        metavar="SPEC",
        help=f"user-given layers as {layers.SHAPE_FORMAT}, e.g. 8,16,28x28,32,3,1,4",
    )
    g.add_argument(
        "--synapse",
        nargs="+",
        choices=models.NAMES,
        default=["delta", "single-exp"],
        metavar="MODEL",
        help=f"synapse models of the step mode: {known} (default: delta single-exp)",
    )
    g.add_argument(
        "--seq-synapse",
        nargs="+",
        choices=models.NAMES,
        default=["delta"],
        metavar="MODEL",
        help="synapse models of the sequence modes, whose units take seconds "
        "(default: delta)",
    )
    g.add_argument(
        "--max-delay",
        nargs="+",
        metavar="STEPS",
        help="run every layer at these max delays (steps, or 'none') instead of "
        "its own",
    )
    g.add_argument("--batch", nargs="+", type=int, help="run every layer at these")
    g.add_argument(
        "--density", type=float, default=0.1, help="spike density (default: 0.1)"
    )
    g.add_argument(
        "--steps",
        nargs="+",
        type=int,
        default=[16, 32],
        metavar="T",
        help="sequence lengths of the sequence modes (default: 16 32)",
    )
    g.add_argument(
        "--impl",
        nargs="+",
        choices=ORDER,
        default=list(ORDER),
        metavar="NAME",
        help=f"implementations: {', '.join(ORDER)} (default: all; the conv2d "
        "floor always runs)",
    )
    g.add_argument("--seed", type=int, default=0, help="(default: 0)")


def _sweeps(g) -> None:
    g.add_argument(
        "--sweep-layer",
        default="nmnist-d10",
        help="layer of the max-delay and batch sweeps, a name or a shape, or "
        "'none' for no sweeps (default: nmnist-d10)",
    )
    g.add_argument(
        "--sweep-synapse",
        choices=models.NAMES,
        default="delta",
        metavar="MODEL",
        help="(default: delta)",
    )
    g.add_argument(
        "--sweep-delays",
        nargs="+",
        type=int,
        default=[0, 2, 4, 8, 10, 16],
        metavar="STEPS",
        help="(default: 0 2 4 8 10 16)",
    )
    g.add_argument(
        "--sweep-batches",
        nargs="+",
        type=int,
        default=[1, 4, 8, 16, 32],
        metavar="B",
        help="(default: 1 4 8 16 32)",
    )


def _measuring(g) -> None:
    g.add_argument(
        "--repeats", type=int, default=10, help="timed units per case (default: 10)"
    )
    g.add_argument(
        "--warmup", type=int, default=2, help="untimed units per case (default: 2)"
    )
    g.add_argument(
        "--budget",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time per case and implementation: fewer repeats run where they "
        "would exceed it, and a unit longer than it is timed once (default: 10)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="time after which a worker is killed (default: 600)",
    )
    g.add_argument(
        "--memory-limit",
        type=float,
        metavar="GB",
        help="skip inferno where its estimated peak exceeds this (default: half "
        "of the device's memory available at the start)",
    )
    g.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    g.add_argument(
        "--tf32",
        action="store_true",
        help="let cuDNN and cuBLAS compute in TF32 on the GPU (default: float32)",
    )


def _quick(args: argparse.Namespace) -> None:
    """Shrinks a run to a smoke test; explicit --impl choices still hold."""
    args.layer, args.shape, args.max_delay, args.batch = ["tiny-d3"], [], None, None
    args.synapse = args.seq_synapse = ["delta"]
    args.mode = ["step", "seq-fwdbwd"]
    args.steps = [4]
    if args.impl == list(ORDER):
        args.impl = [name for name in ORDER if name != "inferno"]
    args.repeats, args.warmup, args.budget = 3, 1, 2.0
    args.sweep_layer, args.sweep_delays, args.sweep_batches = "tiny-d3", [0, 3], [1, 2]


def _layers(args: argparse.Namespace) -> list[layers.Layer]:
    names = args.layer or list(
        layers.CUDA_DEFAULT if args.device == "cuda" else layers.CPU_DEFAULT
    )
    chosen = layers.resolve(names) + [layers.parse_shape(s) for s in args.shape]
    if args.max_delay:
        delays = [None if d.lower() == "none" else int(d) for d in args.max_delay]
        chosen = [lay.with_delay(d) for lay in chosen for d in delays]
    if args.batch:
        chosen = [lay.with_batch(b) for lay in chosen for b in args.batch]
    return list(dict.fromkeys(chosen))


def _sweep_layer(text: str) -> layers.Layer | None:
    if text.lower() == "none":
        return None
    return layers.NAMED[text] if text in layers.NAMED else layers.parse_shape(text)


def build_plan(args: argparse.Namespace) -> list[Case]:
    spec = PlanSpec(
        layers=_layers(args),
        synapses=args.synapse,
        sequence_synapses=args.seq_synapse,
        modes=args.mode,
        steps=args.steps,
        density=args.density,
        device=args.device,
        seed=args.seed,
        sweep_layer=_sweep_layer(args.sweep_layer),
        sweep_synapse=args.sweep_synapse,
        sweep_delays=args.sweep_delays,
        sweep_batches=args.sweep_batches,
    )
    return plan(spec)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.from_json:
        from .run import report_again

        report_again(args.from_json)
        return 0
    if args.quick:
        _quick(args)
    counts = (*args.steps, args.repeats, *args.sweep_batches, args.threads or 1)
    if min(counts) < 1 or args.warmup < 0 or min(args.sweep_delays) < 0:
        p.error("counts (steps, repeats, batches, threads) must be at least 1")
    if not 0 < args.density <= 1 or args.budget <= 0:
        p.error("--density must lie in (0, 1] and --budget be positive")
    try:
        cases = build_plan(args)
    except (ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    threads = args.threads or torch.get_num_threads()
    if args.profile:
        from .profiling import profile_case

        profile_case(cases[0], _implementations(args), threads)
        return 0

    from .run import run_all

    start = time.perf_counter()
    run_all(args, cases, _implementations(args), threads)
    print(f"done in {time.perf_counter() - start:.0f} s; results in {args.out}")
    return 0


def _implementations(args: argparse.Namespace) -> list[str]:
    chosen = set(args.impl) | {FLOOR}
    return [name for name in ORDER if name in chosen and name in IMPLEMENTATIONS]

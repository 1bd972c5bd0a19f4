"""``python -m delayconv.demo``: learning synaptic delays to see motion.

Trains the same small spiking network three times on movies of drifting dots
(see :mod:`delayconv.demo.task`): with delays learned by gradient, with all
delays at zero, and with fixed random delays. It prints the test accuracy of
each, the time per training epoch of the fused operators against the
pure-PyTorch oracle, and the wall time, and writes a PNG of the learning curves
and of the learned delays.

Data-parallel training, one process per core or GPU::

    torchrun --nproc_per_node 2 -m delayconv.demo --ddp
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch
import torch.distributed as dist

from .. import _ops
from .._dispatch import backend
from .task import MotionTask
from .train import VARIANTS, Cluster, TrainConfig, time_epochs, train_variant


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults, task = TrainConfig(), MotionTask()
    parser = argparse.ArgumentParser(
        prog="python -m delayconv.demo",
        description="Learn per-weight synaptic delays to classify the direction "
        "and speed of drifting dots, against zero and fixed random delays.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--epochs", type=int, default=defaults.epochs, help="epochs per variant")
    add("--train-samples", type=int, default=384, help="training movies")
    add("--test-samples", type=int, default=256, help="test movies")
    add("--batch-size", type=int, default=defaults.batch_size, help="global batch")
    add("--size", type=int, default=task.size, help="frame side, in pixels")
    add("--steps", type=int, default=task.steps, help="frames per movie (1 ms each)")
    add("--dots", type=int, default=task.dots, help="dots per movie")
    add(
        "--noise",
        type=float,
        default=task.noise,
        help="background spikes per pixel per step",
    )
    add(
        "--interval",
        type=int,
        default=task.interval,
        help="show the dots every this many steps only (a strobe)",
    )
    add("--filters", type=int, default=defaults.filters, help="conv filters")
    add("--max-delay", type=float, default=defaults.max_delay, help="in ms")
    add("--lr", type=float, default=defaults.lr, help="weight learning rate")
    add("--delay-lr", type=float, default=defaults.delay_lr, help="delay rate, ms")
    add("--seed", type=int, default=defaults.seed, help="seed of everything")
    add(
        "--oracle-epochs",
        type=int,
        default=1,
        help="epochs timed on the pure-PyTorch oracle; 0 skips the timing",
    )
    add("--output", default="demo_results.png", help="the PNG to write")
    add(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process; more slow these small tensors down",
    )
    add(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where to train; with --ddp, cpu uses gloo and cuda NCCL",
    )
    add(
        "--ddp",
        action="store_true",
        help="train data-parallel under torchrun (gloo on CPU, NCCL on GPU)",
    )
    return parser.parse_args(argv)


def start_cluster(args: argparse.Namespace) -> Cluster:
    """Joins the process group when ``--ddp`` is given and picks the device."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched and not args.ddp:
        sys.exit(
            "this process was started by torchrun with several processes, but "
            "without --ddp each would train the whole demo on its own; add --ddp"
        )
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda needs a CUDA build of torch and a visible GPU")
    if not args.ddp:
        return Cluster(device=torch.device("cuda" if cuda else "cpu"))
    if "RANK" not in os.environ:
        sys.exit(
            "--ddp joins a process group that torchrun sets up; run "
            "torchrun --nproc_per_node 2 -m delayconv.demo --ddp"
        )

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        # NCCL refuses two processes on one GPU.
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            sys.exit(
                f"NCCL needs a GPU per process, but this machine has {gpus} for "
                f"{os.environ.get('LOCAL_WORLD_SIZE', '?')} processes; start "
                "fewer, or train on the CPU over gloo with --device cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Cluster(dist.get_rank(), dist.get_world_size(), device)


def check_sizes(args: argparse.Namespace, cluster: Cluster) -> None:
    """Stops with a message on sizes that cannot be split into batches."""
    if args.batch_size % cluster.world:
        sys.exit(
            f"--batch-size {args.batch_size} must split evenly over the "
            f"{cluster.world} processes"
        )
    if args.train_samples < args.batch_size:
        sys.exit(
            f"--train-samples {args.train_samples} must hold at least one batch "
            f"of --batch-size {args.batch_size}"
        )


def report(histories, fused, oracle, config, task, cluster, args) -> None:
    """Prints the results (leading process only)."""
    print(
        f"\nTest accuracy after {config.epochs} epochs on {args.test_samples} "
        f"movies ({task.classes} classes, chance {100 / task.classes:.1f}%):"
    )
    for history in histories:
        print(
            f"  {history.variant:>7} delays  {100 * history.test_accuracy[-1]:5.1f}%"
            f"   (training loss {history.loss[-1]:.3f})"
        )

    batches = args.train_samples // config.batch_size
    print(
        f"Time per training epoch ({batches} batches of {config.batch_size}, "
        f"{cluster.world} process(es), {cluster.device.type}):"
    )
    print(f"  fused operators (backend 'auto')   {fused:7.2f} s")
    if oracle is not None:
        print(
            f"  PyTorch oracle (backend 'reference') {oracle:5.2f} s"
            f"   ({oracle / fused:.1f}x the fused time)"
        )
    if not _ops.has_kernel(cluster.device.type, "sequence"):
        print(
            "  (this build has no compiled sequence operator for "
            f"{cluster.device.type}, so 'auto' ran the oracle as well)"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()

    # The tensors are small: threads that split each operation wait on one
    # another more than they compute, and on a busy machine a second thread
    # made an epoch several times slower, not faster.
    torch.set_num_threads(args.threads)
    cluster = start_cluster(args)
    check_sizes(args, cluster)

    task = MotionTask(
        args.size, args.steps, args.dots, noise=args.noise, interval=args.interval
    )
    config = dataclasses.replace(
        TrainConfig(),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        delay_lr=args.delay_lr,
        filters=args.filters,
        max_delay=args.max_delay,
        seed=args.seed,
    )

    # Every process makes the same data from the seed; each trains on its slice.
    generator = torch.Generator().manual_seed(args.seed)
    train_data = task.generate(args.train_samples, generator)
    test_data = task.generate(args.test_samples, generator)

    # "auto" takes the compiled operators wherever they exist.
    with backend("auto"):
        histories = [
            train_variant(
                variant, task.size, task.classes, train_data, test_data, config, cluster
            )
            for variant in VARIANTS
        ]
    learned = histories[VARIANTS.index("learned")]
    fused = sum(learned.epoch_seconds) / len(learned.epoch_seconds)
    oracle = None
    if args.oracle_epochs > 0:
        oracle = time_epochs(
            "reference",
            task.size,
            task.classes,
            train_data,
            config,
            cluster,
            epochs=args.oracle_epochs,
        )

    if cluster.leader:
        from .plot import plot_results

        report(histories, fused, oracle, config, task, cluster, args)
        plot_results(
            histories,
            args.output,
            chance=1 / task.classes,
            max_delay=config.max_delay,
        )
        print(f"Figure: {os.path.abspath(args.output)}")
        elapsed = time.perf_counter() - started
        print(f"Wall time: {elapsed:.1f} s (after Python start-up and imports)")
    if args.ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

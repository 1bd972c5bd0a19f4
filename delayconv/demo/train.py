"""Training and evaluation of the demo's three variants, on one process or many.

The variants differ only in their delays: ``learned`` draws them at random and
learns them by gradient alongside the weights, ``random`` keeps the same random
draw frozen, ``zero`` keeps them all at zero. Everything else (weights at
initialization, data order, optimizer, epochs) is identical.

Under ``torch.distributed`` every process holds the whole data set (it is made
in-process from the same seed) and takes its own slice of each global batch;
DDP averages the gradients, so a step sees the same gradient as one process
running the whole global batch.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import _dispatch
from .network import MotionNet

VARIANTS = ("learned", "zero", "random")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters shared by every variant.

    Attributes:
        epochs: passes over the training set.
        batch_size: global batch size, split evenly across processes.
        lr: Adam learning rate of the weights, biases and readout.
        delay_lr: Adam learning rate of the delays, in ms per step.
        filters: convolution filters.
        kernel: convolution kernel size, in pixels.
        max_delay: largest delay, in ms.
        membrane_tau: LIF membrane time constant, in ms. One step: the
            neurons forget within a few steps, so lining up events further
            apart in time is left to the synaptic delays.
        seed: seed of the initial weights, the random delays and the data order.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.02
    delay_lr: float = 0.2
    filters: int = 8
    kernel: int = 5
    max_delay: float = 4.0
    membrane_tau: float = 1.0
    seed: int = 0


@dataclass
class History:
    """What one variant's training recorded, one entry per epoch.

    ``delays`` holds the final delays in ms, ``F x 1 x k x k``.
    """

    variant: str
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    delays: torch.Tensor | None = None


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training processes.

    ``world`` is 1 and ``rank`` 0 without ``torch.distributed``.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def leader(self) -> bool:
        """Whether this process prints and plots."""
        return self.rank == 0


def build_model(
    variant: str, size: int, classes: int, config: TrainConfig
) -> MotionNet:
    """The network of ``variant`` with its gradients switched on.

    The weights come from the same seed for every variant, and the ``learned``
    and ``random`` variants start from the same random delays, uniform on
    ``[0, max_delay]`` ms.

    Args:
        variant: ``"learned"``, ``"zero"`` or ``"random"``.
        size: frame height and width, in pixels.
        classes: number of classes.
        config: the hyperparameters.
    """
    if variant not in VARIANTS:
        raise ValueError(f"'variant' must be one of {VARIANTS}, got {variant!r}")

    def draw_delays(default: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(config.seed + 1)
        uniform = torch.rand(default.shape, generator=generator, dtype=default.dtype)
        return uniform * config.max_delay

    torch.manual_seed(config.seed)
    model = MotionNet(
        size,
        classes,
        filters=config.filters,
        kernel=config.kernel,
        max_delay=config.max_delay,
        membrane_tau=config.membrane_tau,
        delay_init=None if variant == "zero" else draw_delays,
    )

    # delayconv follows inferno in creating parameters without gradients.
    model.conv.weight.requires_grad_(True)
    model.conv.delay.requires_grad_(variant == "learned")
    return model


def make_optimizer(model: MotionNet, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters; the delays at their own rate, since
    they are in ms, not in units of current."""
    delay = model.conv.delay
    others = [p for p in model.parameters() if p.requires_grad and p is not delay]
    groups = [{"params": others, "lr": config.lr}]
    if delay.requires_grad:
        groups.append({"params": [delay], "lr": config.delay_lr})
    return torch.optim.Adam(groups)


def wrap(model: MotionNet, cluster: Cluster) -> torch.nn.Module:
    """The module to train: ``model`` itself, or under DDP with several
    processes.

    By default DDP copies rank 0's buffers over the other processes' at every
    forward. The only buffers here are the synapse ring of ``Conv2D``, which
    holds each process's own recent inputs: overwriting it would hand every
    process rank 0's history. The network clears the ring before each batch,
    so there is nothing to keep in step; and setting a new batch size
    reallocates the ring, leaving DDP to broadcast tensors the module no
    longer uses. That per-forward copy is therefore switched off (the one copy
    at start-up, of an all-zero ring, is harmless).
    """
    if cluster.world == 1:
        return model
    device_ids = [cluster.device.index] if cluster.device.type == "cuda" else None

    # torch 2.13 renamed the switch; older versions know only the old name.
    ddp = torch.nn.parallel.DistributedDataParallel
    parameters = inspect.signature(ddp.__init__).parameters
    name = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in parameters
        else "broadcast_buffers"
    )
    return ddp(model, device_ids=device_ids, **{name: False})


def global_batches(
    samples: int, batch_size: int, epoch: int, seed: int
) -> list[torch.Tensor]:
    """Indices of each global batch of one epoch, shuffled from the seed and
    the epoch so that every process draws the same order; the last partial
    batch is dropped."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(samples, generator=generator)
    count = samples // batch_size
    return list(order[: count * batch_size].view(count, batch_size))


def local_slice(indices: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """This process's contiguous share of a global batch."""
    share = len(indices) // cluster.world
    return indices[cluster.rank * share : (cluster.rank + 1) * share]


def to_time_major(movies: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``B x T x 1 x S x S`` movies as the network takes them, ``T x B x ...``."""
    return movies.to(device).transpose(0, 1)


def train_epoch(
    model: MotionNet,
    trained: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    epoch: int,
    cluster: Cluster,
    progress: Any = None,
) -> tuple[float, float]:
    """One pass over the training set.

    Args:
        model: the network.
        trained: ``model`` or its DDP wrapper; its forward is the one trained.
        optimizer: the optimizer of ``model``'s parameters.
        data: ``(movies N x T x 1 x S x S, labels N)``.
        config: the hyperparameters.
        epoch: the epoch number, which seeds the data order.
        cluster: this process's place among the training processes.
        progress: a tqdm bar to advance by one per batch, or None.

    Returns:
        ``(loss, accuracy)`` averaged over the samples of all processes.
    """
    movies, labels = data
    trained.train()
    total_loss, correct, seen = 0.0, 0, 0
    for batch in global_batches(len(labels), config.batch_size, epoch, config.seed):
        mine = local_slice(batch, cluster)
        target = labels[mine].to(cluster.device)
        logits = trained(to_time_major(movies[mine], cluster.device))
        loss = F.cross_entropy(logits, target)

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_delays()

        total_loss += loss.item() * len(mine)
        correct += int((logits.argmax(1) == target).sum())
        seen += len(mine)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")

    # Every process reports the figures of the whole training set.
    totals = torch.tensor([total_loss, correct, seen], dtype=torch.float64)
    if cluster.world > 1:
        totals = totals.to(cluster.device)
        dist.all_reduce(totals)
    total_loss, correct, seen = totals.tolist()
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.no_grad()
def evaluate(
    model: MotionNet,
    data: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    cluster: Cluster,
) -> float:
    """Accuracy on ``data`` (as in :func:`train_epoch`), each process
    classifying every ``world``-th sample and the counts summed across them."""
    movies, labels = data
    model.eval()
    mine = torch.arange(cluster.rank, len(labels), cluster.world)
    correct = torch.zeros(2, dtype=torch.float64, device=cluster.device)
    for batch in mine.split(batch_size):
        logits = model(to_time_major(movies[batch], cluster.device))
        hits = logits.argmax(1) == labels[batch].to(cluster.device)
        correct += torch.stack((hits.sum(), torch.tensor(len(batch)))).to(correct)
    if cluster.world > 1:
        dist.all_reduce(correct)
    return float(correct[0] / correct[1])


def make_bar(total: int, description: str, cluster: Cluster):
    """A tqdm progress bar shown by the leading process only."""
    try:
        from tqdm.auto import tqdm
    except ImportError as error:
        raise ImportError(
            "the delayconv demo shows its progress with tqdm, which is not "
            "installed; pip install tqdm (or pip install 'delayconv[demo]')"
        ) from error
    return tqdm(
        total=total,
        desc=description,
        unit="batch",
        disable=not cluster.leader,
        leave=True,
        dynamic_ncols=True,
    )


def train_variant(
    variant: str,
    size: int,
    classes: int,
    train_data: tuple[torch.Tensor, torch.Tensor],
    test_data: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    cluster: Cluster,
) -> History:
    """Trains one variant from scratch and records its learning curves."""
    model = build_model(variant, size, classes, config).to(cluster.device)
    trained = wrap(model, cluster)
    optimizer = make_optimizer(model, config)
    history = History(variant)

    batches = len(train_data[1]) // config.batch_size
    with make_bar(config.epochs * batches, f"{variant:>7} delays", cluster) as bar:
        for epoch in range(config.epochs):
            start = time.perf_counter()
            loss, accuracy = train_epoch(
                model, trained, optimizer, train_data, config, epoch, cluster, bar
            )
            history.epoch_seconds.append(time.perf_counter() - start)
            history.loss.append(loss)
            history.train_accuracy.append(accuracy)
            history.test_accuracy.append(
                evaluate(model, test_data, config.batch_size, cluster)
            )
            bar.set_postfix(loss=f"{loss:.3f}", test=f"{history.test_accuracy[-1]:.2f}")

    history.delays = model.conv.delay.detach().cpu().clone()
    return history


def time_epochs(
    backend: str,
    size: int,
    classes: int,
    train_data: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    cluster: Cluster,
    epochs: int = 1,
) -> float:
    """Seconds per training epoch of the ``learned`` variant under ``backend``
    (``"auto"`` for the fused operators, ``"reference"`` for the pure-PyTorch
    oracle); the model trained is thrown away."""
    model = build_model("learned", size, classes, config).to(cluster.device)
    trained = wrap(model, cluster)
    optimizer = make_optimizer(model, config)
    batches = len(train_data[1]) // config.batch_size
    seconds = []
    with (
        _dispatch.backend(backend),
        make_bar(epochs * batches, f"timing {backend}", cluster) as bar,
    ):
        for epoch in range(epochs):
            start = time.perf_counter()
            train_epoch(
                model, trained, optimizer, train_data, config, epoch, cluster, bar
            )
            seconds.append(time.perf_counter() - start)
    return sum(seconds) / len(seconds)

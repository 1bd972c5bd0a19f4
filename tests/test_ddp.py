"""Data-parallel training of a delayed Conv2D with DDP over gloo.

Two processes on the loopback interface each run half a batch through the
demo's network (delays requiring grad) wrapped as the demo wraps it; DDP
averages their gradients. The oracle is one process, no DDP, on the whole
batch: the mean loss over the batch is the mean of the two halves' mean losses,
so the gradients must agree up to rounding.
"""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from delayconv.demo.task import MotionTask
from delayconv.demo.train import Cluster, TrainConfig, build_model, local_slice, wrap

WORLD = 2
BATCH = 8
TASK = MotionTask(size=8, steps=6, dots=2, noise=0.05)
CONFIG = TrainConfig(filters=3, kernel=3, max_delay=2.0, seed=3)

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="this torch is built without torch.distributed or gloo",
)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loopback_interface() -> str | None:
    """The name of the loopback interface, so that gloo binds nothing else."""
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in ("lo", "lo0") if name in names), None)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch: movies ``T x B x 1 x S x S`` float64, labels ``B``."""
    movies, labels = TASK.generate(BATCH, torch.Generator().manual_seed(11))
    return movies.transpose(0, 1).double(), labels


def model():
    """The demo's network with learnable delays, in float64."""
    net = build_model("learned", TASK.size, TASK.classes, CONFIG).double()
    assert net.conv.delay.requires_grad
    return net


def gradients(net) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.clone() for name, p in net.named_parameters() if p.requires_grad
    }


def run_rank(rank: int, port: int, folder: str) -> None:
    """One DDP process: forward and backward on its half of the batch."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    interface = loopback_interface()
    if interface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        cluster = Cluster(rank, WORLD)
        net = model()
        trained = wrap(net, cluster)
        assert isinstance(trained, torch.nn.parallel.DistributedDataParallel)

        # This process's share of the batch, as the demo takes it.
        movies, labels = batch()
        mine = local_slice(torch.arange(BATCH), cluster)
        assert len(mine) == BATCH // WORLD
        loss = F.cross_entropy(trained(movies[:, mine]), labels[mine])
        loss.backward()
        torch.save(gradients(net), os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(
        run_rank, args=(free_loopback_port(), str(tmp_path)), nprocs=WORLD, join=True
    )

    net = model()
    movies, labels = batch()
    F.cross_entropy(net(movies), labels).backward()
    expected = gradients(net)

    # Every parameter that trains has a gradient worth comparing.
    assert set(expected) == {
        "conv.weight_",
        "conv.delay_",
        "readout.weight",
        "readout.bias",
    }
    assert expected["conv.delay_"].abs().sum() > 0

    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(
                got[name], value, rtol=1e-10, atol=1e-12, msg=f"{name} on rank {rank}"
            )

"""Shared fixtures: seeded randomness, devices, and matched pairs of layers.

Every test draws its sizes and data from generators seeded by its own node id,
so a failure reproduces exactly while different tests still see different
numbers. Layers are small: the suite runs on two CPU cores in CI.
"""

from __future__ import annotations

import dataclasses
import math
import random
import zlib
from typing import Any

import pytest
import torch

import delayconv

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(
                not torch.cuda.is_available(), reason="needs an NVIDIA GPU"
            ),
        ],
    ),
]

MODELS = (
    "DeltaCurrent",
    "DeltaPlusCurrent",
    "SingleExponentialCurrent",
    "DoubleExponentialCurrent",
)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A Python generator for sizes and choices; also seeds torch's generator."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    return random.Random(seed)


@pytest.fixture(autouse=True)
def ieee_float32_on_gpus():
    """Keeps torch's own GPU convolutions and products in IEEE float32.

    The compiled kernels never use TF32, but the pure-PyTorch reference and
    the oracles built from ``conv2d`` follow torch's settings, whose cuDNN
    default rounds float32 operands to 10-bit mantissas on Ampere and newer:
    about 1e-3 off, a hundred times the float32 tolerance.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def single_thread():
    """Runs a test on one intra-op thread.

    The tests that use it compute on tensors of a few hundred elements, where
    more threads only add synchronisation, which on a loaded two-core machine
    costs several times the work itself. The test of the kernels' parallel
    loops sets its own thread count instead.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A synapse model with its parameters, buildable in either library."""

    name: str
    mode: str = "previous"
    tolerance: float = 0.0
    current_overbound: float | None = 0.0
    spike_overbound: bool | None = False
    charge: float = 1.5
    taus: tuple[float, ...] = ()

    def args(self) -> tuple[Any, ...]:
        return (
            self.charge,
            *self.taus,
            self.mode,
            self.tolerance,
            self.current_overbound,
            self.spike_overbound,
        )

    def constructor(self, library: Any = delayconv) -> Any:
        """The model's partial constructor from ``library`` (a module)."""
        return getattr(library, self.name).partialconstructor(*self.args())

    @property
    def recorded(self) -> int:
        """Currents the compact model records beside its spikes."""
        return {"DeltaCurrent": 0, "DoubleExponentialCurrent": 2}.get(self.name, 1)

    @property
    def spikes_comparable(self) -> bool:
        """Whether inferno's ``spike_at`` gives the intended answer: it swaps the
        tolerance and the spike overbound, harmless only for 0 and False."""
        return self.tolerance == 0.0 and self.spike_overbound is False


def model_config(name: str, **options: Any) -> ModelConfig:
    """A model with time constants that suit it (decay above rise)."""
    taus = {
        "SingleExponentialCurrent": (4.5,),
        "DoubleExponentialCurrent": (7.5, 2.5),
    }.get(name, ())
    return ModelConfig(name, taus=taus, **options)


def random_model(rng: random.Random, name: str | None = None) -> ModelConfig:
    name = name or rng.choice(MODELS)
    taus: tuple[float, ...] = ()
    if name == "SingleExponentialCurrent":
        taus = (rng.uniform(2.0, 10.0),)
    elif name == "DoubleExponentialCurrent":
        taus = (rng.uniform(6.0, 10.0), rng.uniform(1.0, 5.0))
    return ModelConfig(
        name,
        mode=rng.choice(["previous", "nearest"]),
        tolerance=rng.choice([0.0, 0.05]),
        current_overbound=rng.choice([0.0, None, 0.3]),
        spike_overbound=rng.choice([False, None, True]),
        charge=rng.choice([1.0, 0.5, 2.0, -0.75]),
        taus=taus,
    )


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """Constructor arguments of a ``Conv2D``, shared by both libraries."""

    height: int
    width: int
    channels: int
    filters: int
    step_time: float
    kernel: tuple[int, int]
    model: ModelConfig
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    bias: bool = False
    delay: float | None = None
    batch_size: int = 1

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(
                (self.height, self.width),
                self.padding,
                self.dilation,
                self.kernel,
                self.stride,
                strict=True,
            )
        )

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, self.channels, self.height, self.width)

    @property
    def records(self) -> int:
        """``R = ceil(D / dt) + 1``, computed here without the package."""
        if not self.delay:
            return 1
        return math.ceil(self.delay / self.step_time) + 1

    def build(self, library: Any = delayconv, **overrides: Any) -> Any:
        kwargs = {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "bias": self.bias,
            "delay": self.delay,
            "batch_size": self.batch_size,
            "synapse": self.model.constructor(library),
        }
        kwargs.update(overrides)
        return library.Conv2D(
            self.height,
            self.width,
            self.channels,
            self.filters,
            self.step_time,
            self.kernel,
            **kwargs,
        )


def random_layer(
    rng: random.Random, model: ModelConfig | None = None, **fixed: Any
) -> LayerConfig:
    """Odd geometry on purpose (kernel, stride, padding and dilation drawn per
    dimension, so mostly unequal pairs); ``fixed`` overrides any field. The
    output is never empty."""
    while True:
        config = LayerConfig(
            height=rng.randint(5, 10),
            width=rng.randint(5, 10),
            channels=rng.randint(1, 3),
            filters=rng.randint(1, 3),
            step_time=rng.choice([0.7, 0.25, 1.0, 1.3]),
            kernel=(rng.randint(1, 3), rng.randint(1, 3)),
            model=model or random_model(rng),
            stride=(rng.randint(1, 2), rng.randint(1, 3)),
            padding=(rng.randint(0, 2), rng.randint(0, 1)),
            dilation=(rng.randint(1, 2), rng.randint(1, 2)),
            bias=rng.random() < 0.5,
            delay=rng.choice([None, 0.0, 2.3, 3.0, 1.1]),
            batch_size=rng.randint(1, 4),
        )
        config = dataclasses.replace(config, **fixed)
        if min(config.out_size) >= 1:
            return config


def random_delays(
    shape: tuple[int, ...], max_delay: float, step_time: float, dtype=torch.float32
) -> torch.Tensor:
    """Per-weight delays in ms over ``[0, 1.3 D + 0.5)``: fractional and distinct,
    except that a third of them sit exactly on step multiples; the first lies
    beyond the maximum."""
    delays = torch.rand(shape, dtype=dtype) * (max_delay * 1.3 + 0.5)
    flat = delays.view(-1)
    snapped = flat[1::3]
    steps = torch.randint(
        0, max(math.ceil(max_delay / step_time), 1) + 2, snapped.shape
    )
    flat[1::3] = steps.to(dtype) * step_time
    flat[0] = max_delay + 0.4
    return delays


def random_input(
    shape: tuple[int, ...], graded: bool, dtype=torch.float32, density: float = 0.35
) -> torch.Tensor:
    """Spikes as bool, or graded input: positive values where it spikes, else 0."""
    draw = torch.rand(shape, dtype=dtype)
    if not graded:
        return draw < density
    return torch.where(draw < density, draw * 2.0 + 0.1, 0.0)


def inferno_neural() -> Any:
    """inferno's ``neural`` module, imported only by the tests that compare
    with it: the GPU check machine runs the CUDA tests without inferno-ai,
    which CI installs from requirements-dev.txt."""
    return pytest.importorskip("inferno.neural", reason="inferno-ai is not installed")


def make_pair(config: LayerConfig) -> tuple[delayconv.Conv2D, Any]:
    """A delayconv layer and an inferno layer with the same parameters.

    The delays (when the layer has them) are distinct and fractional, with some
    beyond the maximum.
    """
    ours = config.build(delayconv)
    theirs = config.build(inferno_neural())
    if config.delay is not None:
        ours.delay = random_delays(
            tuple(ours.delay.shape), config.delay, config.step_time
        )
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
        if config.bias:
            theirs.bias.copy_(ours.bias)
        if config.delay is not None:
            theirs.delay.copy_(ours.delay)
    return ours, theirs


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of a module's parameters and buffers."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(before: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].shape == value.shape, key
        assert after[key].dtype == value.dtype, key
        assert torch.equal(after[key], value), key


def expected_spike_at(
    history: list[torch.Tensor],
    selector: torch.Tensor,
    step_time: float,
    max_delay: float | None,
    model: ModelConfig,
) -> torch.Tensor:
    """Spikes read ``selector`` ms ago, worked out from SPEC section 3 alone.

    ``history[k]`` holds the spikes ``k`` steps back (``B x *S``), ``R`` of them;
    ``selector`` is ``B x *S x D``. The rules: clamp to ``[0, D]``; a selector
    within the tolerance of an observation reads it; otherwise ``previous``
    reads the older neighbour, ``nearest`` (and ``linear``, for spikes) the
    newer one when the sample lies past the middle of the step; an overbound,
    if set, replaces reads that lay beyond the tolerance outside ``[0, D]``.
    """
    dt, tol = step_time, model.tolerance
    ring = torch.stack(history)
    if len(history) == 1:
        steps = torch.zeros(selector.shape, dtype=torch.long)
        inbound = selector.abs() <= tol
    else:
        bounded = selector.clamp(0.0, max_delay or 0.0)
        shift = bounded / dt
        nearest_step = shift.round()
        exact = (nearest_step * dt - bounded).abs() <= tol
        older, newer = shift.ceil(), shift.floor()
        since_older = dt - dt * (shift - shift.floor())
        if model.mode in ("nearest", "linear"):
            pick = torch.where(since_older / dt > 0.5, newer, older)
        else:
            pick = older
        steps = torch.where(exact, nearest_step, pick).long()
        inbound = (selector - bounded).abs() <= tol

    # value[b, ..., d] = history[steps[b, ..., d]][b, ...]
    expanded = ring.unsqueeze(-1).expand(*ring.shape, selector.shape[-1])
    value = expanded.gather(0, steps.unsqueeze(0)).squeeze(0)
    if model.spike_overbound is not None:
        value = torch.where(inbound, value, model.spike_overbound)
    return value

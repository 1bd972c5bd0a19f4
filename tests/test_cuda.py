"""The CUDA operators against the CPU operators and the reference.

Every test is parametrized over devices: the ``cpu`` case holds the CPU
operator to the same checks (and so checks the checks where no GPU exists),
the ``cuda`` case skips, with its reason, where no GPU is visible or the build
has no CUDA kernels.

Which observation a delay reads depends on rounding in the delay's dtype, so
float32 and float64 are compared with the reference run in the same dtype.
Half-precision types are compared with the float64 reference on cases whose
delays lie well inside a step or on one (``step_time`` a power of two), where
rounding cannot move a read to another observation.

The sequence operators (``sequence`` and ``sequence_backward``) have CUDA-only
tests: their CPU kernels are held to the reference elsewhere, and here they
are the oracle of the CUDA kernels, beside the reference and autograd.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

import delayconv
from delayconv import _dispatch, _ops, reference
from delayconv.geometry import ConvGeometry
from delayconv.kinds import Interpolation, SynapseKind
from delayconv.reference import SynapseSpec

HAS_GPU = torch.cuda.is_available()
CUDA_READY = HAS_GPU and _ops.has_kernel("cuda")
CUDA_REASON = (
    "needs an NVIDIA GPU (torch.cuda.is_available() is False)"
    if not HAS_GPU
    else "this build of delayconv has no CUDA kernels; rebuild with "
    "FORCE_CUDA=1 pip install --no-build-isolation ."
)
cuda_only = [pytest.mark.cuda, pytest.mark.skipif(not CUDA_READY, reason=CUDA_REASON)]
DEVICES = ["cpu", pytest.param("cuda", marks=cuda_only)]
needs_kernels = pytest.mark.skipif(
    not _ops.AVAILABLE, reason=f"delayconv's operators are not built: {_ops.LOAD_ERROR}"
)
pytestmark = needs_kernels

HALF_TYPES = (torch.float16, torch.bfloat16)
DTYPES = (torch.float64, torch.float32, *HALF_TYPES)
# Relative tolerances on each dtype, scaled by the output's magnitude.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 4e-2,
}


def skip_unsupported(device: str, dtype: torch.dtype) -> None:
    if device == "cpu" and dtype in HALF_TYPES:
        pytest.skip(f"the CPU kernels compute in float32 or float64, not {dtype}")


# ----- cases -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One randomized configuration of a step."""

    spec: SynapseSpec
    geometry: ConvGeometry
    filters: int
    batch: int
    bias: bool
    delays: str  # "distinct", "none" or "equal"
    seed: int

    @property
    def records(self) -> int:
        return self.spec.records

    def __str__(self) -> str:
        s, g = self.spec, self.geometry
        return (
            f"{s.kind.name.lower()}-{s.interp.name.lower()}-tol{s.tolerance}"
            f"-over{s.current_overbound}-bias{int(self.bias)}-{self.delays}"
            f"-b{self.batch}c{g.channels}h{g.height}w{g.width}f{self.filters}"
            f"k{g.kernel}s{g.stride}p{g.padding}d{g.dilation}-seed{self.seed}"
        )


def make_case(
    seed: int,
    *,
    kind: SynapseKind | None = None,
    interp: Interpolation | None = None,
    safe: bool = False,
    batch: int | None = None,
    delays: str = "distinct",
    **spec_overrides,
) -> Case:
    """A random odd-shaped case; the synapse model and interpolation cycle
    with the seed unless given. ``safe`` picks a power-of-two step so that
    half-precision rounding cannot change which observation a delay reads."""
    rng = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=rng))]

    kind = SynapseKind(seed % 4) if kind is None else kind
    interp = Interpolation(seed // 4 % 3) if interp is None else interp
    step_time = 0.5 if safe else pick([0.3, 0.7, 1.0])
    taus = {
        SynapseKind.SINGLE_EXPONENTIAL: (pick([2.0, 5.5]), 0.0),
        SynapseKind.DOUBLE_EXPONENTIAL: (pick([6.0, 9.0]), pick([1.5, 2.5])),
    }.get(kind, (0.0, 0.0))
    spec = SynapseSpec(
        kind=kind,
        spike_charge=pick([1.0, 2.5]),
        tau_a=taus[0],
        tau_b=taus[1],
        step_time=step_time,
        max_delay=step_time * pick([2.5, 4.0, 6.3]),
        interp=interp,
        tolerance=pick([0.0, 0.05]),
        current_overbound=pick([None, 0.0, 0.7]),
    )
    geometry = ConvGeometry(
        channels=pick([1, 2, 3]),
        height=pick([5, 7, 9]),
        width=pick([4, 6, 11]),
        kernel=(pick([1, 3]), pick([2, 3])),
        stride=(pick([1, 2]), pick([1, 3])),
        padding=(pick([0, 1]), pick([0, 2])),
        dilation=(pick([1, 2]), 1),
    )
    return Case(
        spec=dataclasses.replace(spec, **spec_overrides),
        geometry=geometry,
        filters=pick([1, 4, 5]),
        batch=pick([1, 2, 3]) if batch is None else batch,
        bias=bool(seed % 2),
        delays=delays,
        seed=seed,
    )


def make_delays(case: Case, shape, *, safe: bool) -> torch.Tensor:
    """Distinct per-weight delays: fractional ones, multiples of the step, and
    some beyond either bound of [0, max_delay]. ``safe`` delays lie well
    inside a step, on a step, or well outside the bounds."""
    rng = torch.Generator().manual_seed(case.seed + 1)
    dt, top = case.spec.step_time, case.spec.max_delay
    steps = math.floor(top / dt)
    whole = torch.randint(0, steps + 1, shape, generator=rng).double()
    fraction = torch.rand(shape, generator=rng, dtype=torch.float64)
    kind = torch.randint(0, 5, shape, generator=rng)
    if safe:
        inside = torch.randint(0, steps, shape, generator=rng).double()
        delays = dt * (inside + 0.15 + 0.7 * fraction)
    else:
        delays = dt * (whole + fraction)
    delays = torch.where(kind == 0, dt * whole, delays)  # on an observation
    delays = torch.where(kind == 1, top + 0.3 + fraction, delays)  # beyond
    delays = torch.where(kind == 2, -0.3 - fraction, delays)  # negative
    return delays


def make_parameters(case: Case, dtype: torch.dtype, *, safe: bool = False):
    """Weights (F x C x kH x kW), bias (F) and delays for a case, in float64,
    rounded to ``dtype``'s values."""
    g = case.geometry
    rng = torch.Generator().manual_seed(case.seed + 2)
    shape = (case.filters, g.channels, *g.kernel)
    weight = torch.rand(shape, generator=rng, dtype=torch.float64) - 0.3
    bias = (
        torch.rand(case.filters, generator=rng, dtype=torch.float64)
        if case.bias
        else None
    )
    if case.delays == "none":
        delay = None
    elif case.delays == "equal":
        delay = torch.full(shape, 0.6 * case.spec.max_delay, dtype=torch.float64)
    else:
        delay = make_delays(case, shape, safe=safe)
    return tuple(
        None if t is None else t.to(dtype).double() for t in (weight, bias, delay)
    )


def make_inputs(case: Case, steps: int):
    """Inputs (``steps x B x C x H x W``) and injected currents or None."""
    g = case.geometry
    rng = torch.Generator().manual_seed(case.seed + 3)
    shape = (steps, case.batch, g.channels, g.height, g.width)
    spikes = torch.rand(shape, generator=rng) < 0.35
    if case.spec.kind == SynapseKind.DELTA_PLUS:
        graded = torch.rand(shape, generator=rng, dtype=torch.float64)
        injected = torch.rand(shape, generator=rng, dtype=torch.float64) - 0.5
        return graded * spikes, injected
    return spikes, None


# ----- engines -----------------------------------------------------------


class OpEngine:
    """A ring advanced by torch.ops.delayconv.step_."""

    def __init__(self, case: Case, device: str, dtype: torch.dtype):
        lead = (case.records, case.batch, *case.geometry.state_shape)
        self.case = case
        self.device = device
        self.dtype = dtype
        self.spike_ring = torch.zeros(lead, dtype=torch.bool, device=device)
        self.current_ring = torch.zeros(
            (case.spec.recorded, *lead), dtype=dtype, device=device
        )
        self.ring_head = torch.zeros((), dtype=torch.long, device=device)
        self.config = _ops.step_config(case.spec, case.geometry)

    def arguments(self, x, injected, weight, bias, delay) -> tuple:
        def put(t, dtype=None):
            if t is None:
                return None
            return t.to(device=self.device, dtype=dtype or self.dtype)

        x = put(x, x.dtype)
        return (
            self.spike_ring,
            self.current_ring,
            self.ring_head,
            x,
            put(injected),
            put(weight),
            put(bias),
            put(delay),
            *self.config,
        )

    def step(self, x, injected, weight, bias, delay) -> torch.Tensor:
        args = self.arguments(x, injected, weight, bias, delay)
        return torch.ops.delayconv.step_(*args)


class ReferenceEngine:
    """The same ring advanced by delayconv.reference.step, on the CPU."""

    def __init__(self, case: Case, dtype: torch.dtype):
        lead = (case.records, case.batch, *case.geometry.state_shape)
        self.case = case
        self.dtype = dtype
        self.spike_ring = torch.zeros(lead, dtype=torch.bool)
        self.current_ring = torch.zeros((case.spec.recorded, *lead), dtype=dtype)
        self.ring_head = torch.zeros((), dtype=torch.long)

    def step(self, x, injected, weight, bias, delay) -> torch.Tensor:
        def put(t):
            return None if t is None else t.to(self.dtype)

        out, self.spike_ring, self.current_ring, self.ring_head = reference.step(
            self.case.spec,
            self.spike_ring,
            self.current_ring,
            self.ring_head,
            x,
            put(injected),
            put(weight),
            put(bias),
            put(delay),
            self.case.geometry,
        )
        return out


def assert_close(actual, expected, dtype, what: str) -> None:
    actual = actual.cpu().double()
    expected = expected.cpu().double()
    rtol = TOLERANCE[dtype]
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}"
    )


def assert_same_ring(engine, other, dtype) -> None:
    assert torch.equal(engine.spike_ring.cpu(), other.spike_ring.cpu())
    assert engine.ring_head.item() == other.ring_head.item()
    assert_close(engine.current_ring, other.current_ring, dtype, "current ring")


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in HALF_TYPES else dtype


def run_against(case, device, dtype, steps, other_factory, *, safe=False) -> None:
    weight, bias, delay = make_parameters(case, dtype, safe=safe)
    inputs, injected = make_inputs(case, steps)
    engine = OpEngine(case, device, dtype)
    other = other_factory()
    for t in range(steps):
        extra = None if injected is None else injected[t]
        out = engine.step(inputs[t], extra, weight, bias, delay)
        expected = other.step(inputs[t], extra, weight, bias, delay)
        assert out.dtype == dtype and out.device.type == device
        assert_close(out, expected, dtype, f"{case}, step {t}")
    assert_same_ring(engine, other, dtype)


# ----- tests -------------------------------------------------------------

RANDOM_CASES = [make_case(seed) for seed in range(24)]


@pytest.mark.parametrize("case", RANDOM_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_step_matches_reference(device, dtype, case):
    steps = case.records + 4
    run_against(case, device, dtype, steps, lambda: ReferenceEngine(case, dtype))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_every_dtype_matches_reference(device, dtype, seed):
    skip_unsupported(device, dtype)
    case = make_case(seed, safe=True)
    steps = case.records + 3
    ref = reference_dtype(dtype)
    run_against(
        case, device, dtype, steps, lambda: ReferenceEngine(case, ref), safe=True
    )


@pytest.mark.parametrize("case", RANDOM_CASES[:12], ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_step_matches_cpu_operator(device, dtype, case):
    steps = case.records + 4
    run_against(case, device, dtype, steps, lambda: OpEngine(case, "cpu", dtype))


@pytest.mark.parametrize("delays", ["none", "equal"])
@pytest.mark.parametrize("kind", list(SynapseKind), ids=lambda k: k.name.lower())
@pytest.mark.parametrize("device", DEVICES)
def test_shared_or_no_delays(device, kind, delays):
    case = make_case(int(kind) + 4, kind=kind, delays=delays)
    steps = case.records + 3
    dtype = torch.float32
    run_against(case, device, dtype, steps, lambda: ReferenceEngine(case, dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    case = make_case(7, batch=0)
    engine = OpEngine(case, device, torch.float32)
    weight, bias, delay = make_parameters(case, torch.float32)
    g = case.geometry
    x = torch.zeros(0, g.channels, g.height, g.width)
    out = engine.step(x, None, weight, bias, delay)
    assert out.shape == (0, case.filters, g.out_height, g.out_width)
    assert engine.ring_head.item() == 1 % case.records


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_arguments(device):
    case = make_case(5, kind=SynapseKind.DELTA_PLUS)
    dtype = torch.float64
    weight, bias, delay = make_parameters(case, dtype)
    inputs, injected = make_inputs(case, case.records + 2)
    engine = OpEngine(case, device, dtype)
    other = ReferenceEngine(case, dtype)

    def strided(t):
        # The same values behind transposed strides.
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    for t in range(inputs.shape[0]):
        args = engine.arguments(inputs[t], injected[t], weight, bias, delay)
        args = [strided(a) if i in (3, 4, 5, 7) else a for i, a in enumerate(args)]
        assert not args[3].is_contiguous()
        out = torch.ops.delayconv.step_(*args)
        expected = other.step(inputs[t], injected[t], weight, bias, delay)
        assert_close(out, expected, dtype, f"step {t}")
    assert_same_ring(engine, other, dtype)


@pytest.mark.parametrize("input_dtype", [torch.bool, torch.uint8, torch.float32])
@pytest.mark.parametrize("device", DEVICES)
def test_input_dtypes(device, input_dtype):
    case = make_case(10)
    dtype = torch.float64
    weight, bias, delay = make_parameters(case, dtype)
    inputs, _ = make_inputs(case, case.records + 2)
    engine = OpEngine(case, device, dtype)
    other = ReferenceEngine(case, dtype)
    for t in range(inputs.shape[0]):
        x = inputs[t].to(input_dtype)
        out = engine.step(x, None, weight, bias, delay)
        assert_close(out, other.step(x, None, weight, bias, delay), dtype, str(t))


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SynapseKind), ids=lambda k: k.name.lower())
@pytest.mark.parametrize("device", DEVICES)
def test_long_run_wraps_the_ring(device, kind):
    """Thousands of steps through a short ring on the GPU, held to the CPU
    operator: the head wraps hundreds of times. The CPU is held to the
    (slow) reference for fewer steps."""
    case = make_case(
        int(kind) + 8, kind=kind, interp=Interpolation.LINEAR, max_delay=2.1
    )
    steps = 3000 if device == "cuda" else 120
    dtype = torch.float64
    if device == "cuda":
        factory = lambda: OpEngine(case, "cpu", dtype)  # noqa: E731
    else:
        factory = lambda: ReferenceEngine(case, dtype)  # noqa: E731
    run_against(case, device, dtype, steps, factory)


@pytest.mark.parametrize("overbound", [None, 0.5])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, overbound):
    for seed in (1, 6):
        case = make_case(seed, current_overbound=overbound)
        weight, bias, delay = make_parameters(case, torch.float32)
        inputs, injected = make_inputs(case, 2)
        engine = OpEngine(case, device, torch.float32)
        extra = None if injected is None else injected[0]
        engine.step(inputs[0], extra, weight, bias, delay)
        args = engine.arguments(inputs[1], extra, weight, bias, delay)
        torch.library.opcheck(torch.ops.delayconv.step_.default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_errors_name_the_argument(device):
    case = make_case(3)
    engine = OpEngine(case, device, torch.float32)
    weight, bias, delay = make_parameters(case, torch.float32)
    inputs, _ = make_inputs(case, 1)
    args = list(engine.arguments(inputs[0], None, weight, bias, delay))
    ring = engine.current_ring
    args[1] = ring.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not args[1].is_contiguous()
    with pytest.raises(RuntimeError, match="must be contiguous"):
        torch.ops.delayconv.step_(*args)
    args[1] = ring
    args[5] = torch.cat([args[5], args[5][:, :1]], dim=1)
    with pytest.raises(RuntimeError, match=r"'weight' has \d+ input channels"):
        torch.ops.delayconv.step_(*args)


@pytest.mark.skipif(not CUDA_READY, reason=CUDA_REASON)
@pytest.mark.cuda
def test_mixed_devices_are_refused():
    case = make_case(3)
    engine = OpEngine(case, "cuda", torch.float32)
    weight, bias, delay = make_parameters(case, torch.float32)
    inputs, _ = make_inputs(case, 1)
    args = list(engine.arguments(inputs[0], None, weight, bias, delay))
    args[7] = args[7].cpu()
    with pytest.raises(RuntimeError, match="'delay' must be on the weight's device"):
        torch.ops.delayconv.step_(*args)


@pytest.mark.skipif(not CUDA_READY, reason=CUDA_REASON)
@pytest.mark.cuda
def test_cuda_graph_replays_steps():
    """The step reads its head on the GPU, so it can be captured in a graph."""
    case = make_case(9)
    dtype = torch.float32
    weight, bias, delay = make_parameters(case, dtype)
    inputs, _ = make_inputs(case, 8)
    eager = OpEngine(case, "cuda", dtype)
    graphed = OpEngine(case, "cuda", dtype)
    static_x = inputs[0].cuda()
    args = graphed.arguments(static_x, None, weight, bias, delay)

    # Warm up on a side stream, as CUDA graph capture requires, then rewind.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.ops.delayconv.step_(*args)
    torch.cuda.current_stream().wait_stream(side)
    graphed.spike_ring.zero_()
    graphed.current_ring.zero_()
    graphed.ring_head.zero_()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = torch.ops.delayconv.step_(*args)
    graphed.spike_ring.zero_()
    graphed.current_ring.zero_()
    graphed.ring_head.zero_()
    for t in range(inputs.shape[0]):
        static_x.copy_(inputs[t])
        graph.replay()
        expected = eager.step(inputs[t], None, weight, bias, delay)
        assert_close(static_out, expected, dtype, f"replay {t}")
    assert_same_ring(graphed, eager, dtype)


# ----- sequences ---------------------------------------------------------

SEQUENCE_READY = (
    HAS_GPU
    and _ops.has_kernel("cuda", "sequence")
    and _ops.has_kernel("cuda", "sequence_backward")
)
SEQUENCE_REASON = (
    CUDA_REASON
    if not CUDA_READY
    else "this build of delayconv has no CUDA kernels of the sequence operators; "
    "rebuild with FORCE_CUDA=1 pip install --no-build-isolation ."
)
cuda_sequence = [
    pytest.mark.cuda,
    pytest.mark.skipif(not SEQUENCE_READY, reason=SEQUENCE_REASON),
]
# Relative tolerances of gradients, which sum many more terms than an output.
GRAD_TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 2e-2,
    torch.bfloat16: 8e-2,
}
GRAD_NAMES = ("inputs", "injected", "weight", "bias", "delay")
MODEL_NAMES = (
    "DeltaCurrent",
    "DeltaPlusCurrent",
    "SingleExponentialCurrent",
    "DoubleExponentialCurrent",
)


@dataclasses.dataclass
class SequenceArgs:
    """The tensors of one call of ``sequence``: a ring part-way through a
    simulation (random observations, the head anywhere), T steps of input,
    and the layer's parameters; all in float64 (inputs as drawn) on the CPU,
    with values representable in the dtype under test."""

    case: Case
    spike_ring: torch.Tensor
    current_ring: torch.Tensor
    ring_head: torch.Tensor
    inputs: torch.Tensor
    injected: torch.Tensor | None
    weight: torch.Tensor
    bias: torch.Tensor | None
    delay: torch.Tensor | None

    @property
    def config(self) -> tuple:
        return _ops.step_config(self.case.spec, self.case.geometry)

    def tensors(self, device: str, dtype: torch.dtype) -> list:
        """Fresh copies of the operator's tensor arguments on a device, in a
        dtype; the inputs keep theirs unless floating point."""

        def put(t, floating=True):
            if t is None:
                return None
            moved = t.to(device=device, dtype=dtype if floating else t.dtype)
            return moved.detach().clone()

        return [
            put(self.spike_ring, False),
            put(self.current_ring),
            put(self.ring_head, False),
            put(self.inputs, self.inputs.is_floating_point()),
            put(self.injected),
            put(self.weight),
            put(self.bias),
            put(self.delay),
        ]


def sequence_args(
    case: Case,
    dtype: torch.dtype,
    steps: int,
    *,
    safe: bool = False,
    graded: bool = False,
    delays: torch.Tensor | None = None,
) -> SequenceArgs:
    """Arguments for ``steps`` steps; ``graded`` turns spikes into float
    inputs (gradients reach floating-point inputs only)."""
    weight, bias, delay = make_parameters(case, dtype, safe=safe)
    if delays is not None:
        delay = delays
    inputs, injected = make_inputs(case, steps)
    if graded and not inputs.is_floating_point():
        rng = torch.Generator().manual_seed(case.seed + 4)
        draw = torch.rand(inputs.shape, generator=rng, dtype=torch.float64)
        inputs = inputs * (0.5 + draw)
    if inputs.is_floating_point():
        inputs = inputs.to(dtype).double()
    rng = torch.Generator().manual_seed(case.seed + 5)
    lead = (case.records, case.batch, *case.geometry.state_shape)
    spikes = torch.rand(lead, generator=rng) < 0.35
    currents = torch.rand((case.spec.recorded, *lead), generator=rng) - 0.3
    head = torch.randint(case.records, (), generator=rng)
    return SequenceArgs(
        case,
        spikes,
        currents.to(dtype).double(),
        head,
        inputs,
        injected if injected is None else injected.to(dtype).double(),
        weight,
        bias,
        delay,
    )


def output_gradient(case: Case, steps: int, dtype: torch.dtype) -> torch.Tensor:
    g = case.geometry
    rng = torch.Generator().manual_seed(case.seed + 6)
    shape = (steps, case.batch, case.filters, g.out_height, g.out_width)
    return (torch.rand(shape, generator=rng, dtype=torch.float64) - 0.5).to(dtype)


def run_operators(args: SequenceArgs, device: str, dtype, grad_outputs):
    """The sequence operator and its backward (every gradient of an argument
    that is there): the outputs, the two histories, and the five gradients
    (None where the operator returns an empty one)."""
    tensors = args.tensors(device, dtype)
    outputs, spikes, currents = torch.ops.delayconv.sequence(*tensors, *args.config)
    weight, delay = tensors[5], tensors[7]
    grads = torch.ops.delayconv.sequence_backward(
        grad_outputs.to(device=device, dtype=dtype),
        spikes,
        currents,
        weight,
        delay,
        *args.config,
        [True, args.injected is not None, True, args.bias is not None, True],
    )
    grads = [None if g.numel() == 0 and g.dim() == 1 else g for g in grads]
    return outputs, spikes, currents, grads


def run_reference(args: SequenceArgs, dtype, grad_outputs):
    """reference.sequence and its gradients by autograd, on the CPU."""
    tensors = args.tensors("cpu", dtype)
    if tensors[3].is_floating_point():
        tensors[3].requires_grad_()
    for index in (4, 5, 6, 7):
        if tensors[index] is not None:
            tensors[index].requires_grad_()
    outputs, *_ = reference.sequence(args.case.spec, *tensors, args.case.geometry)
    wanted = [t for t in tensors[3:] if t is not None and t.requires_grad]
    grads = iter(
        torch.autograd.grad(outputs, wanted, grad_outputs.to(dtype), allow_unused=True)
    )
    by_name = {}
    for name, t in zip(GRAD_NAMES, tensors[3:], strict=True):
        grad = next(grads) if t is not None and t.requires_grad else None
        by_name[name] = None if t is None else grad
    return outputs.detach(), by_name


def assert_grads_close(actual, expected, dtype, what: str) -> None:
    """Gradients by name; None expected where an argument is absent or
    takes no gradient (zeros from the operator are accepted there)."""
    for name, got, want in zip(GRAD_NAMES, actual, expected, strict=True):
        if want is None:
            assert got is None or not got.cpu().any(), f"{what}: {name}"
            continue
        assert got is not None, f"{what}: no gradient of {name}"
        assert got.dtype == dtype, f"{what}: {name} has dtype {got.dtype}"
        got, want = got.cpu().double(), want.cpu().double()
        rtol = GRAD_TOLERANCE[dtype]
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        torch.testing.assert_close(
            got,
            want,
            rtol=rtol,
            atol=rtol * scale,
            msg=lambda m, name=name: f"{what}: grad of {name}: {m}",
        )


def sequence_lengths(case: Case) -> list[int]:
    """T shorter than the ring and longer than it."""
    return [max(case.records - 2, 1), case.records + 4]


SEQUENCE_CASES = [make_case(seed) for seed in range(100, 124)]


def assert_sequence_like_cpu(case, device, dtype, steps: int, *, graded: bool) -> None:
    """The sequence operator and its backward on ``device`` against the CPU
    operators, in the same dtype: outputs, both histories, every gradient."""
    args = sequence_args(case, dtype, steps, graded=graded)
    grad_outputs = output_gradient(case, steps, dtype)
    got = run_operators(args, device, dtype, grad_outputs)
    want = run_operators(args, "cpu", dtype, grad_outputs)
    what = f"{case}, T={steps}"
    assert got[0].device.type == device
    assert_close(got[0], want[0], dtype, f"{what}: outputs")
    assert torch.equal(got[1].cpu(), want[1]), f"{what}: spike history"
    assert_close(got[2], want[2], dtype, f"{what}: current history")
    assert_grads_close(got[3], want[3], dtype, what)


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sequence_matches_cpu_operator(device, dtype, case):
    """Outputs, histories and every gradient against the CPU operators, in
    the same dtype; the delays are distinct, some on an observation and some
    beyond either bound."""
    for steps in sequence_lengths(case):
        assert_sequence_like_cpu(case, device, dtype, steps, graded=case.seed % 3 == 0)


def sized_case(seed: int, size: str) -> Case:
    """A random model on a layer sized to reach a kernel path the small
    cases do not: ``wide`` has more taps per filter (32 x 3 x 3) and per
    input channel (40 x 3 x 3) than one shared-memory stage holds and, over
    8 steps, more output positions than one chunk of the weights' gradient;
    ``ring1`` and ``ring2`` keep one and two observations (max delay 0 and
    one step), the shortest rings."""
    case = make_case(seed)
    if size == "wide":
        geometry = ConvGeometry(
            channels=32,
            height=16,
            width=16,
            kernel=(3, 3),
            stride=(1, 1),
            padding=(1, 1),
            dilation=(1, 1),
        )
        return dataclasses.replace(case, geometry=geometry, filters=40, batch=4)
    steps_back = {"ring1": 0, "ring2": 1}[size]
    spec = dataclasses.replace(case.spec, max_delay=steps_back * case.spec.step_time)
    return dataclasses.replace(case, spec=spec)


SIZED_CASES = [
    sized_case(seed, size)
    for seed, size in [(150, "wide"), (155, "wide"), (160, "ring1"), (161, "ring2")]
]


@pytest.mark.parametrize("case", SIZED_CASES, ids=str)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_only)])
def test_sized_layers_step_like_the_cpu_operator(device, case):
    dtype = torch.float32
    steps = case.records + 3
    run_against(case, device, dtype, steps, lambda: OpEngine(case, "cpu", dtype))


@pytest.mark.parametrize("case", SIZED_CASES, ids=str)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sized_layers_sequence_like_the_cpu_operator(device, case):
    assert_sequence_like_cpu(case, device, torch.float64, 8, graded=True)


@pytest.mark.parametrize("seed", range(130, 142))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sequence_matches_reference(device, dtype, seed):
    """Outputs and gradients against the reference and autograd, in every
    dtype; the half types against the float64 reference, on delays that
    rounding cannot move to another observation."""
    half = dtype in HALF_TYPES
    case = make_case(seed, safe=half, delays=["distinct", "none"][seed % 5 == 0])
    ref = reference_dtype(dtype)
    for steps in sequence_lengths(case):
        args = sequence_args(case, dtype, steps, safe=half, graded=True)
        grad_outputs = output_gradient(case, steps, dtype)
        outputs, _, _, grads = run_operators(args, device, dtype, grad_outputs)
        expected, expected_grads = run_reference(args, ref, grad_outputs)
        what = f"{case}, T={steps}"
        assert outputs.dtype == dtype
        assert_close(outputs, expected, dtype, f"{what}: outputs")
        by_name = [expected_grads[name] for name in GRAD_NAMES]
        if case.spec.kind == SynapseKind.DELTA:
            by_name[0] = None  # spikes carry no gradient to the input
        assert_grads_close(grads, by_name, dtype, what)


@pytest.mark.parametrize("kind", list(SynapseKind), ids=lambda k: k.name.lower())
@pytest.mark.parametrize("delays", ["none", "equal"])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sequence_without_or_with_shared_delays(device, delays, kind):
    """The dense (cuDNN) path without delays, and one delay for all weights,
    which the CUDA kernels run per weight."""
    case = make_case(int(kind) + 140, kind=kind, delays=delays)
    dtype = torch.float32
    for steps in sequence_lengths(case):
        args = sequence_args(case, dtype, steps, graded=True)
        grad_outputs = output_gradient(case, steps, dtype)
        got = run_operators(args, device, dtype, grad_outputs)
        want = run_operators(args, "cpu", dtype, grad_outputs)
        what = f"{case}, T={steps}"
        assert_close(got[0], want[0], dtype, f"{what}: outputs")
        assert torch.equal(got[1].cpu(), want[1]), f"{what}: spike history"
        assert_close(got[2], want[2], dtype, f"{what}: current history")
        assert_grads_close(got[3], want[3], dtype, what)


@pytest.mark.parametrize("batch, steps", [(0, 3), (2, 0), (0, 0)])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sequence_of_nothing(device, batch, steps):
    """An empty batch or no steps: empty outputs, the ring alone as the
    history, and gradients of the right shapes (zero for the parameters)."""
    case = make_case(150, kind=SynapseKind.DOUBLE_EXPONENTIAL, batch=batch)
    dtype = torch.float32
    args = sequence_args(case, dtype, steps, graded=True)
    grad_outputs = output_gradient(case, steps, dtype)
    got = run_operators(args, device, dtype, grad_outputs)
    want = run_operators(args, "cpu", dtype, grad_outputs)
    g = case.geometry
    assert got[0].shape == (steps, batch, case.filters, g.out_height, g.out_width)
    assert got[1].shape == (case.records + steps, batch, *g.state_shape)
    assert torch.equal(got[1].cpu(), want[1])
    assert torch.equal(got[2].cpu(), want[2])
    for name, grad, expected in zip(GRAD_NAMES, got[3], want[3], strict=True):
        assert (grad is None) == (expected is None), name
        if grad is not None:
            assert grad.shape == expected.shape, name
            assert torch.equal(grad.cpu(), expected), name


def gradcheck_delays(case: Case, shape) -> torch.Tensor:
    """Delays where the read is smooth: at least 0.15 of a step from every
    observation and from both bounds, or well beyond them."""
    rng = torch.Generator().manual_seed(case.seed + 7)
    dt, top = case.spec.step_time, case.spec.max_delay
    steps = math.floor(top / dt)
    inside = torch.randint(0, steps, shape, generator=rng).double()
    fraction = torch.rand(shape, generator=rng, dtype=torch.float64)
    delays = dt * (inside + 0.15 + 0.7 * fraction)
    kind = torch.randint(0, 6, shape, generator=rng)
    delays = torch.where(kind == 0, top + 0.3 + fraction, delays)
    return torch.where(kind == 1, -0.3 - fraction, delays)


GRADCHECK_MODELS = [
    (SynapseKind.DELTA, Interpolation.LINEAR, None),
    (SynapseKind.DELTA_PLUS, Interpolation.LINEAR, 0.7),
    (SynapseKind.SINGLE_EXPONENTIAL, Interpolation.PREVIOUS, 0.0),
    (SynapseKind.DOUBLE_EXPONENTIAL, Interpolation.NEAREST, 0.7),
]


@pytest.mark.parametrize(
    "kind, interp, overbound",
    GRADCHECK_MODELS,
    ids=lambda v: v.name.lower() if isinstance(v, SynapseKind | Interpolation) else v,
)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sequence_gradcheck(device, kind, interp, overbound):
    """float64 gradcheck with respect to the inputs (the injected current for
    the delta-plus model), the weight, the bias and the delay. The delta
    model's input only sets spikes, which have no gradient."""
    case = make_case(
        160 + int(kind),
        kind=kind,
        interp=interp,
        batch=1,
        tolerance=0.0,
        current_overbound=overbound,
    )
    dtype = torch.float64
    shape = (case.filters, case.geometry.channels, *case.geometry.kernel)
    args = sequence_args(
        case, dtype, 3, graded=True, delays=gradcheck_delays(case, shape)
    )
    tensors = args.tensors(device, dtype)
    differentiable = [3, 4, 5, 6, 7]
    if kind == SynapseKind.DELTA:
        differentiable.remove(3)
    leaves = [
        tensors[i].requires_grad_() for i in differentiable if tensors[i] is not None
    ]
    positions = [i for i in differentiable if tensors[i] is not None]

    def outputs(*leaves):
        call = list(tensors)
        for index, leaf in zip(positions, leaves, strict=True):
            call[index] = leaf
        return torch.ops.delayconv.sequence(*call, *args.config)[0]

    assert torch.autograd.gradcheck(outputs, leaves)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sequence_opcheck(device, requires_grad):
    for seed in (101, 107):  # delta plus, double exponential
        case = make_case(seed, current_overbound=0.5)
        args = sequence_args(case, torch.float32, 3, graded=True)
        tensors = args.tensors(device, torch.float32)
        if requires_grad:
            for index in (3, 4, 5, 6, 7):
                if tensors[index] is not None:
                    tensors[index].requires_grad_()
        torch.library.opcheck(
            torch.ops.delayconv.sequence.default, (*tensors, *args.config)
        )


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_sequence_backward_opcheck(device):
    for seed in (100, 107):  # delta, double exponential
        case = make_case(seed, current_overbound=0.5)
        args = sequence_args(case, torch.float32, 3, graded=True)
        tensors = args.tensors(device, torch.float32)
        _, spikes, currents = torch.ops.delayconv.sequence(*tensors, *args.config)
        grad_outputs = output_gradient(case, 3, torch.float32).to(device)
        for mask in ([True] * 5, [False, True, True, False, True]):
            torch.library.opcheck(
                torch.ops.delayconv.sequence_backward.default,
                (
                    grad_outputs,
                    spikes,
                    currents,
                    tensors[5],
                    tensors[7],
                    *args.config,
                    mask,
                ),
            )


def sequence_layer(name: str, delayed: bool) -> delayconv.Conv2D:
    taus = {
        "SingleExponentialCurrent": (4.0,),
        "DoubleExponentialCurrent": (6.0, 2.0),
    }.get(name, ())
    mode = "linear" if name.startswith("Delta") else "nearest"
    synapse = getattr(delayconv, name).partialconstructor(1.5, *taus, mode, 0.01)
    torch.manual_seed(3)
    return delayconv.Conv2D(
        9,
        7,
        3,
        4,
        0.5,
        (3, 2),
        stride=(2, 1),
        padding=1,
        synapse=synapse,
        bias=True,
        delay=2.3 if delayed else None,
        batch_size=2,
        delay_init=lambda d: torch.rand_like(d) * 2.8 - 0.2,
    )


@pytest.mark.parametrize("delayed", [True, False], ids=["delays", "no-delays"])
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=cuda_sequence)])
def test_forward_sequence_equals_a_loop_of_forward(device, name, delayed):
    """forward_sequence on the GPU leaves the outputs and the state that T
    calls of forward (the step operator) leave."""
    stepped = sequence_layer(name, delayed).to(device)
    sequenced = copy.deepcopy(stepped)
    rng = torch.Generator().manual_seed(4)
    steps = 11
    inputs = torch.rand(steps, 2, 3, 9, 7, generator=rng)
    inputs = (inputs * (inputs < 0.4)).to(device)
    injected = (torch.rand(steps, 2, 3, 9, 7, generator=rng) - 0.5).to(device)
    extra = (injected,) if name == "DeltaPlusCurrent" else ()
    with torch.no_grad():
        for warm in range(2):  # both continue from the same nonzero state
            stepped(inputs[warm], *(e[warm] for e in extra))
            sequenced(inputs[warm], *(e[warm] for e in extra))
        loop = torch.stack(
            [stepped(inputs[t], *(e[t] for e in extra)) for t in range(steps)]
        )
        together = sequenced.forward_sequence(inputs, *extra)
    assert together.device.type == device
    assert_close(together, loop, torch.float32, "outputs")
    final, expected = sequenced.state_dict(), stepped.state_dict()
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        if value.dtype == torch.bool or value.dtype == torch.long:
            assert torch.equal(final[key], value), key
        else:
            assert_close(final[key], value, torch.float32, key)


# ----- the layer ---------------------------------------------------------


def make_layer(seed: int) -> delayconv.Conv2D:
    torch.manual_seed(seed)
    return delayconv.Conv2D(
        9,
        7,
        3,
        4,
        0.5,
        (3, 2),
        stride=(2, 1),
        padding=1,
        synapse=delayconv.SingleExponentialCurrent.partialconstructor(
            1.5, 4.0, interp_tol=0.01
        ),
        bias=True,
        delay=2.3,
        batch_size=2,
        delay_init=lambda d: torch.rand_like(d) * 2.8 - 0.2,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_layer_moves_mid_simulation(device):
    """.to(device) and .to(dtype) between steps carry the ring along: the next
    steps match a layer that never moved."""
    torch.manual_seed(0)
    inputs = torch.rand(12, 2, 3, 9, 7) < 0.3
    still = make_layer(1)
    moving = copy.deepcopy(still)
    with torch.no_grad():
        for t in range(12):
            if t == 4:
                moving.to(device)
            if t == 8:
                moving.to(torch.float64)
            expected = still(inputs[t])
            out = moving(inputs[t].to(moving.weight.device))
            assert out.device.type == (device if t >= 4 else "cpu")
            assert out.dtype == (torch.float64 if t >= 8 else torch.float32)
            assert_close(out, expected, torch.float32, f"step {t}")
    assert moving.synapse.ring_head.device.type == device
    assert moving.synapse.current_ring.dtype == torch.float64
    assert moving.synapse.ring_head.item() == still.synapse.ring_head.item()


def test_cuda_weights_without_cuda_kernels_ask_for_a_rebuild(monkeypatch):
    """A build without CUDA kernels refuses CUDA tensors and says how to
    rebuild. The rule is checked on a stand-in weight, so it runs anywhere."""
    monkeypatch.setattr(_ops, "has_kernel", lambda device, op="step_": False)
    weight = type("Weight", (), {"device": torch.device("cuda"), "dtype": None})()
    with pytest.raises(RuntimeError, match="FORCE_CUDA=1 pip install"):
        _dispatch._use_compiled(weight, "step_")


@pytest.mark.skipif(
    not HAS_GPU or _ops.has_kernel("cuda"),
    reason="needs a GPU and a build of delayconv without CUDA kernels",
)
def test_layer_on_gpu_without_cuda_kernels_asks_for_a_rebuild():
    layer = make_layer(2).to("cuda")
    with pytest.raises(RuntimeError, match="FORCE_CUDA=1 pip install"):
        layer(torch.zeros(2, 3, 9, 7, dtype=torch.bool, device="cuda"))

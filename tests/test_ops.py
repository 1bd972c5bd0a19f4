"""The compiled operators on their own: opcheck, gradients, torch.compile,
memory layouts, error messages and index arithmetic.

The oracle throughout is the pure-PyTorch reference (delayconv.reference),
differentiated by autograd, or float64 finite differences (gradcheck).
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import delayconv
from delayconv import _ops, reference
from tests.conftest import DEVICES

pytestmark = pytest.mark.skipif(
    not _ops.AVAILABLE, reason="the compiled operators are not built"
)

OPS = torch.ops.delayconv
KINDS = (
    "DeltaCurrent",
    "DeltaPlusCurrent",
    "SingleExponentialCurrent",
    "DoubleExponentialCurrent",
)


def synapse_for(kind: str, *, interp: str = "linear", overbound=0.0):
    """A partial constructor whose delayed reads are differentiable."""
    model = getattr(delayconv, kind)
    if kind in ("DeltaCurrent", "DeltaPlusCurrent"):
        return model.partialconstructor(1.3, interp, 0.0, overbound, False)
    if kind == "SingleExponentialCurrent":
        return model.partialconstructor(1.3, 4.0, "nearest", 0.0, overbound, False)
    return model.partialconstructor(1.3, 7.0, 2.5, "nearest", 0.0, overbound, False)


def away_from_steps(delay: torch.Tensor, step_time: float) -> torch.Tensor:
    """Moves delays into the middle of their step interval, where the read is
    smooth and finite differences see the defined gradient."""
    steps = torch.floor(delay / step_time)
    return (steps + 0.2 + 0.6 * torch.rand_like(delay)) * step_time


def make_layer(
    kind: str,
    rng: random.Random,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
    delayed: bool = True,
    overbound=0.0,
    batch: int | None = None,
    tiny: bool = False,
) -> delayconv.Conv2D:
    """A small layer of odd geometry with a warmed-up ring and distinct
    fractional delays (a few beyond the maximum); `tiny` for finite
    differences, which cost two steps per input element."""
    largest = 5 if tiny else 8
    step_time = rng.choice([1.0, 0.7])
    max_delay = 2.6 * step_time
    while True:
        height, width = rng.randint(4, largest), rng.randint(4, largest)
        kernel = (rng.randint(1, 3), rng.randint(1, 3))
        dilation = (1, rng.randint(1, 2))
        if (kernel[1] - 1) * dilation[1] < width:
            break
    conv = delayconv.Conv2D(
        height,
        width,
        rng.randint(1, 2 if tiny else 3),
        rng.randint(1, 3),
        step_time,
        kernel,
        stride=(rng.randint(1, 2), 1),
        padding=(rng.randint(0, 1), rng.randint(0, 1)),
        dilation=dilation,
        synapse=synapse_for(kind, overbound=overbound),
        bias=True,
        delay=max_delay if delayed else None,
        batch_size=batch if batch is not None else rng.randint(1, 2),
    ).to(device=device, dtype=dtype)
    if delayed:
        delay = torch.rand_like(conv.delay) * max_delay
        delay = away_from_steps(delay, step_time).clamp(max=max_delay * 0.99)
        delay.view(-1)[::7] = max_delay * 1.5
        conv.delay = delay
    with torch.no_grad():
        warm = torch.rand(3, *conv.batched_inshape, device=device) < 0.4
        conv.forward_sequence(warm.to(dtype))
    return conv


def op_arguments(conv: delayconv.Conv2D, inputs, injected=None, delay=True):
    synapse = conv.synapse
    config = _ops.step_config(synapse.spec(), conv.geometry)
    return (
        synapse.spike_ring.clone(),
        synapse.current_ring.clone(),
        synapse.ring_head.clone(),
        inputs,
        injected,
        conv.weight.detach().clone(),
        conv.bias.detach().clone(),
        conv.delay.detach().clone() if delay and conv.delay is not None else None,
        *config,
    )


def graded_inputs(conv, steps: int, device="cpu", dtype=torch.float64) -> torch.Tensor:
    shape = (steps, *conv.batched_inshape)
    values = torch.rand(shape, device=device, dtype=dtype)
    return torch.where(values < 0.5, values + 0.5, 0.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_step(device, kind, rng):
    conv = make_layer(kind, rng, device=device)
    x = graded_inputs(conv, 1, device)[0]
    injected = torch.randn_like(x) if kind == "DeltaPlusCurrent" else None
    torch.library.opcheck(OPS.step_.default, op_arguments(conv, x, injected))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_sequence(device, kind, requires_grad, rng):
    conv = make_layer(kind, rng, device=device)
    x = graded_inputs(conv, 4, device).requires_grad_(requires_grad)
    args = list(op_arguments(conv, x))
    for index in (5, 6, 7):
        args[index].requires_grad_(requires_grad)
    torch.library.opcheck(OPS.sequence.default, tuple(args))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_sequence_backward(device, kind, rng):
    conv = make_layer(kind, rng, device=device)
    args = op_arguments(conv, graded_inputs(conv, 3, device))
    outputs, spikes, currents = OPS.sequence(*args)
    grad = torch.randn_like(outputs)
    weight, delay, config = args[5], args[7], args[8:]
    mask = [True, kind == "DeltaPlusCurrent", True, True, True]
    torch.library.opcheck(
        OPS.sequence_backward.default,
        (grad, spikes, currents, weight, delay, *config, mask),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(device, kind, rng):
    """float64 finite differences for every differentiable argument."""
    conv = make_layer(kind, rng, device=device, batch=1, tiny=True)
    x = graded_inputs(conv, 2, device).requires_grad_(kind != "DeltaCurrent")
    args = list(op_arguments(conv, x))
    if kind == "DeltaPlusCurrent":
        args[4] = torch.randn_like(x).requires_grad_()
    for index in (5, 6, 7):
        args[index].requires_grad_()
    wanted = [
        i for i in (3, 4, 5, 6, 7) if args[i] is not None and args[i].requires_grad
    ]

    def outputs(*tensors):
        call = list(args)
        for index, tensor in zip(wanted, tensors, strict=True):
            call[index] = tensor
        return OPS.sequence(*call)[0]

    assert torch.autograd.gradcheck(outputs, [args[i] for i in wanted])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("overbound", [0.0, None, 0.4])
def test_gradients_match_the_reference(device, kind, overbound, rng):
    """Including delays exactly on observations, where the gradient is the one
    defined by reference.gradient_taps rather than a derivative of the read."""
    conv = make_layer(kind, rng, device=device, overbound=overbound)
    with torch.no_grad():
        delay = conv.delay.clone()
        delay.view(-1)[1::5] = (
            torch.randint(0, 3, delay.view(-1)[1::5].shape, dtype=delay.dtype).to(
                device
            )
            * conv.dt
        )
        conv.delay = delay
    x = graded_inputs(conv, 4, device)
    injected = torch.randn_like(x) if kind == "DeltaPlusCurrent" else None
    grads = {}
    for backend in ("compiled", "reference"):
        leaves = [t.detach().clone().requires_grad_() for t in (x, conv.weight)]
        leaves += [conv.bias.detach().clone().requires_grad_()]
        leaves += [conv.delay.detach().clone().requires_grad_()]
        extra = None if injected is None else injected.clone().requires_grad_()
        args = list(op_arguments(conv, leaves[0], extra))
        args[5], args[6], args[7] = leaves[1], leaves[2], leaves[3]
        if backend == "compiled":
            out = OPS.sequence(*args)[0]
        else:
            out = reference.sequence(
                conv.synapse.spec(),
                *args[:3],
                args[3],
                extra,
                *leaves[1:],
                conv.geometry,
            )[0]
        out.backward(torch.linspace(-1, 1, out.numel(), device=device).view_as(out))
        grads[backend] = [t.grad for t in leaves] + [
            None if extra is None else extra.grad
        ]
    for got, want in zip(grads["compiled"], grads["reference"], strict=True):
        if want is None:
            assert got is None or not got.any()
            continue
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_delay_gradient_at_the_bounds():
    """A delay on 0 gets the right derivative, one at the maximum the left one,
    one beyond it none: checked against one-sided float64 differences."""
    torch.manual_seed(3)
    conv = delayconv.Conv2D(
        6,
        6,
        1,
        1,
        1.0,
        1,
        delay=3.0,
        synapse=delayconv.DeltaPlusCurrent.partialconstructor(1.0, "linear", 0.0, None),
    ).double()
    with torch.no_grad():
        conv.forward_sequence(graded_inputs(conv, 5))
    x = graded_inputs(conv, 1)
    state = {k: v.clone() for k, v in conv.state_dict().items()}

    def output(delay: float) -> torch.Tensor:
        conv.load_state_dict(state)
        conv.delay = torch.full_like(conv.delay, delay)
        return conv.forward_sequence(x).sum()

    for delay, side in ((0.0, +1), (3.0, -1), (3.5, 0)):
        conv.load_state_dict(state)
        conv.delay = torch.full_like(conv.delay, delay)
        conv.delay.requires_grad_(True)
        (grad,) = torch.autograd.grad(conv.forward_sequence(x).sum(), conv.delay)
        conv.delay.requires_grad_(False)
        with torch.no_grad():
            h = 1e-6
            expected = (
                0.0
                if side == 0
                else (output(delay + side * h) - output(delay)) / (side * h)
            )
        assert grad.item() == pytest.approx(float(expected), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kind", ["DeltaCurrent", "DeltaPlusCurrent"])
def test_flat_interpolation_refuses_delay_gradients(kind, rng):
    conv = make_layer(kind, rng)
    conv.synapse.interp_mode = "previous"
    conv.delay.requires_grad_(True)
    with pytest.raises(ValueError, match="interp_mode='linear'"):
        conv.forward_sequence(graded_inputs(conv, 2))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_matches_eager(device, rng):
    eager = make_layer(
        "SingleExponentialCurrent", rng, device=device, dtype=torch.float32
    )
    compiled_layer = copy.deepcopy(eager)
    inputs = [torch.rand(eager.batched_inshape, device=device) < 0.3 for _ in range(5)]

    def run(layer, xs):
        return torch.stack([layer(x) for x in xs])

    torch._dynamo.reset()
    with torch.no_grad():
        expected = run(eager, inputs)
        got = torch.compile(run, fullgraph=True)(compiled_layer, inputs)
    torch.testing.assert_close(got, expected)
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled_layer.state_dict()[key], value)

    eager.weight.requires_grad_(True)
    compiled_layer.weight.requires_grad_(True)
    xs = torch.stack(inputs).float()
    want = torch.autograd.grad(eager.forward_sequence(xs).square().sum(), eager.weight)
    loss = torch.compile(
        lambda m, x: m.forward_sequence(x).square().sum(), fullgraph=True
    )
    got = torch.autograd.grad(loss(compiled_layer, xs), compiled_layer.weight)
    torch.testing.assert_close(got[0], want[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [0, 1])
def test_small_batches(device, batch, rng):
    conv = make_layer(
        "DoubleExponentialCurrent", rng, device=device, batch=max(batch, 1)
    )
    if batch == 0:
        # A ring for batch 0 holds nothing; the operators must accept it.
        conv.batchsz = 1
        synapse = conv.synapse
        synapse.spike_ring = synapse.spike_ring[:, :0].contiguous()
        synapse.current_ring = synapse.current_ring[:, :, :0].contiguous()
        synapse._batch_size = 0
    x = graded_inputs(conv, 3, device)
    args = op_arguments(conv, x)
    outputs = OPS.sequence(*args)[0]
    expected = reference.sequence(conv.synapse.spec(), *args[:8], conv.geometry)[0]
    assert outputs.shape == expected.shape
    torch.testing.assert_close(outputs, expected, rtol=1e-12, atol=1e-12)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The values of `t` in memory with every other element skipped."""
    spread = torch.empty((*t.shape, 2), dtype=t.dtype, device=t.device)[..., 0]
    spread.copy_(t)
    return spread


@pytest.mark.parametrize("device", DEVICES)
def test_strided_and_channels_last_arguments(device, rng):
    conv = make_layer("DeltaPlusCurrent", rng, device=device)
    x = graded_inputs(conv, 1, device)[0]
    injected = torch.randn_like(x)
    plain = op_arguments(conv, x, injected)
    expected = OPS.step_(*plain)

    odd = list(op_arguments(conv, x.to(memory_format=torch.channels_last), injected))
    odd[4] = strided(injected)
    odd[5] = odd[5].to(memory_format=torch.channels_last)
    odd[6] = strided(odd[6])
    odd[7] = strided(odd[7])
    assert not odd[4].is_contiguous() and not odd[7].is_contiguous()
    torch.testing.assert_close(OPS.step_(*odd), expected, rtol=1e-12, atol=1e-12)
    for ring, other in zip(plain[:3], odd[:3], strict=True):
        torch.testing.assert_close(ring, other)


def _fake_message(op, args) -> str:
    mode = FakeTensorMode()
    with mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(RuntimeError) as caught:
            op(*fake)
    return str(caught.value)


def _real_message(op, args) -> str:
    with pytest.raises(RuntimeError) as caught:
        op(*args)
    return str(caught.value)


BAD_STEP_ARGUMENTS = {
    "input shape": lambda a: a.__setitem__(3, a[3][..., :-1]),
    "complex input": lambda a: a.__setitem__(3, a[3].to(torch.complex128)),
    "bias length": lambda a: a.__setitem__(6, a[6][:-1]),
    "delay dtype": lambda a: a.__setitem__(7, a[7].float()),
    "ring length": lambda a: a.__setitem__(0, a[0][:-1]),
    "current dtype": lambda a: a.__setitem__(1, a[1].float()),
    "head rank": lambda a: a.__setitem__(2, a[2].view(1)),
    "weight channels": lambda a: a.__setitem__(5, a[5][:, :0]),
    "stride": lambda a: a.__setitem__(8, [0, 1]),
    "padding length": lambda a: a.__setitem__(9, [1]),
    "kind": lambda a: a.__setitem__(11, 7),
    "step time": lambda a: a.__setitem__(15, -1.0),
    "interp": lambda a: a.__setitem__(17, 5),
    "tolerance": lambda a: a.__setitem__(18, -0.5),
    "kernel too large": lambda a: a.__setitem__(10, [40, 40]),
}


@pytest.mark.parametrize("mistake", sorted(BAD_STEP_ARGUMENTS))
def test_fake_kernels_reject_in_the_same_words(mistake, rng):
    conv = make_layer("SingleExponentialCurrent", rng)
    args = list(op_arguments(conv, graded_inputs(conv, 1)[0]))
    BAD_STEP_ARGUMENTS[mistake](args)
    real = _real_message(OPS.step_, args)
    assert real.startswith("delayconv.step_: '") or "delayconv.step_:" in real
    assert _fake_message(OPS.step_, args) == real

    sequence_args = list(args)
    sequence_args[3] = args[3].unsqueeze(0)
    real = _real_message(OPS.sequence, sequence_args)
    assert _fake_message(OPS.sequence, sequence_args) == real


def test_fake_sequence_backward_rejects_in_the_same_words(rng):
    conv = make_layer("DeltaPlusCurrent", rng)
    args = op_arguments(conv, graded_inputs(conv, 3))
    outputs, spikes, currents = OPS.sequence(*args)
    config = args[8:]
    mask = [True, True, True, True, True]
    for bad in (
        (outputs[:-1], spikes, currents),
        (outputs, spikes[:1], currents),
        (outputs, spikes, currents.float()),
    ):
        call = (*bad, args[5], args[7], *config, mask)
        real = _real_message(OPS.sequence_backward, call)
        assert _fake_message(OPS.sequence_backward, call) == real


def test_plane_offsets_use_64_bit_arithmetic():
    """The kernels' offsets, at sizes whose products pass 2^31 and 2^32."""
    cases = [
        (5, 7, 3_000_000_000, 0, 3, 100, 1024),
        (1, 7, 700_000_000, 0, 4, 5, 4096),
        (7, 0, 3_000_000_000, 40, 3, 100, 1024),
        (16, 0, 2**31 + 17, 9, 16, 2**20, 2**12),
    ]
    for newest, records, size, t, steps, bc, area in cases:
        index = (newest - steps) % records if records else newest + t - steps
        expected = index * size + bc * area
        got = OPS._plane_offset(newest, records, size, t, steps, bc, area)
        assert got == expected
        assert expected > 2**31


def test_portable_loops_agree_with_the_vectorized_ones(tmp_path):
    """DELAYCONV_PORTABLE=1 forces the loops that every CPU can run; both
    paths must give the same numbers (float64: same arithmetic, other order)."""
    script = textwrap.dedent(
        """
        import sys, torch, delayconv
        torch.manual_seed(5)
        outs = []
        for kind, padding in (("DeltaCurrent", 0), ("SingleExponentialCurrent", 2)):
            model = getattr(delayconv, kind)
            synapse = (model.partialconstructor(1.0) if kind == "DeltaCurrent"
                       else model.partialconstructor(1.0, 5.0))
            conv = delayconv.Conv2D(19, 23, 3, 5, 1.0, 3, padding=padding, delay=4.0,
                                    batch_size=2, synapse=synapse, bias=True).double()
            conv.delay = torch.rand_like(conv.delay) * 5.0
            xs = (torch.rand(9, 2, 3, 19, 23) < 0.3).double()
            with torch.no_grad():
                outs.append(torch.stack([conv(x) for x in xs]))
                outs.append(conv.forward_sequence(xs))
        torch.save(outs, sys.argv[1])
        """
    )
    files = {}
    for name, portable in (("vector", False), ("portable", True)):
        env = dict(os.environ)
        env.pop("DELAYCONV_PORTABLE", None)
        if portable:
            env["DELAYCONV_PORTABLE"] = "1"
        files[name] = tmp_path / f"{name}.pt"
        subprocess.run(
            [sys.executable, "-c", script, str(files[name])], env=env, check=True
        )
    vector = torch.load(files["vector"])
    portable = torch.load(files["portable"])
    for a, b in zip(vector, portable, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

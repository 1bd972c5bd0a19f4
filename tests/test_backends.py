"""The compiled step operator against the pure-PyTorch reference.

Two layers with the same parameters and state run the same random inputs, one
under ``delayconv.backend("compiled")`` and one under ``"reference"``; their
outputs and their rings must agree to 1e-5 (relative to the output's scale)
in float32 and 1e-12 in float64. While the compiled layer runs, the reference
step is made to fail, so that the comparison cannot pass by running the
reference twice. The sweep runs small layers on one thread; one test runs a
layer large enough for the kernels' parallel loops to split, on two threads.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import warnings
from unittest import mock

import pytest
import torch

import delayconv
from delayconv import reference

from .conftest import DEVICES, MODELS, ModelConfig, random_input, random_layer

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@contextlib.contextmanager
def compiled_only():
    """The compiled backend, with the reference step forbidden."""
    failure = AssertionError("the compiled backend ran the reference step")
    with (
        delayconv.backend("compiled"),
        mock.patch.object(reference, "step", side_effect=failure),
    ):
        yield


def random_model(rng: random.Random) -> ModelConfig:
    name = rng.choice(MODELS)
    modes = ["previous", "nearest"] + (["linear"] if name.startswith("Delta") else [])
    taus = {
        "SingleExponentialCurrent": (rng.uniform(2.0, 8.0),),
        "DoubleExponentialCurrent": (rng.uniform(6.0, 9.0), rng.uniform(1.0, 4.0)),
    }.get(name, ())
    return ModelConfig(
        name,
        mode=rng.choice(modes),
        tolerance=rng.choice([0.0, 0.05]),
        current_overbound=rng.choice([0.0, None, 0.3]),
        charge=rng.choice([1.5, -0.5]),
        taus=taus,
    )


def matched_layers(config, dtype, device, uniform: bool):
    compiled = config.build().to(device=device, dtype=dtype)
    referenced = config.build().to(device=device, dtype=dtype)
    if config.delay is not None:
        delays = torch.rand(compiled.delay.shape, dtype=dtype) * (
            config.delay * 1.3 + 0.5
        )
        delays.view(-1)[1::3] = (
            torch.randint(0, 5, delays.view(-1)[1::3].shape).to(dtype)
            * config.step_time
        )
        if uniform:
            delays.fill_(delays.view(-1)[0].item())
        compiled.delay = delays.to(device)
    referenced.load_state_dict(compiled.state_dict())
    return compiled, referenced


def step_input(config, dtype, device, kind):
    if kind == "bool":
        x = random_input(config.input_shape, graded=False)
    elif kind == "int":
        x = torch.randint(0, 3, config.input_shape)
    else:
        x = random_input(config.input_shape, graded=True, dtype=dtype)
    return x.to(device)


def compare_states(compiled, referenced, tolerance):
    ours, theirs = compiled.state_dict(), referenced.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if value.is_floating_point():
            torch.testing.assert_close(ours[key], value, rtol=tolerance, atol=tolerance)
        else:
            assert torch.equal(ours[key], value), key


def run_both(config, dtype, device, rng, uniform=False):
    """Runs ``2 R + 3`` steps on both backends, comparing as it goes."""
    compiled, referenced = matched_layers(config, dtype, device, uniform)
    tolerance = TOLERANCE[dtype]
    kind = rng.choice(["bool", "int", "graded"])

    for _ in range(2 * config.records + 3):
        x = step_input(config, dtype, device, kind)
        extra = ()
        if config.model.name == "DeltaPlusCurrent":
            extra = (torch.randn(config.input_shape, dtype=dtype, device=device),)
        with compiled_only():
            got = compiled(x, *extra)
        with delayconv.backend("reference"):
            want = referenced(x, *extra)
        assert got.dtype == want.dtype == dtype
        scale = want.abs().max().item() + 1.0
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance * scale)
    compare_states(compiled, referenced, tolerance)


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("trial", range(20))
def test_compiled_step_equals_reference(trial, dtype, device, rng):
    config = random_layer(rng, model=random_model(rng))
    run_both(config, dtype, device, rng, uniform=rng.random() < 0.2)


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_step_in_parallel_equals_reference(dtype, device, rng):
    # B x C x H x W above the kernels' grain of 4096 elements, and B x F > 1.
    model = random_model(rng)
    config = random_layer(rng, model=model, delay=1.4, step_time=0.5)
    config = dataclasses.replace(
        config, batch_size=3, channels=2, height=37, width=41, filters=2
    )
    run_both(config, dtype, device, rng)


def delta_model(rng: random.Random) -> ModelConfig:
    return ModelConfig(
        "DeltaCurrent",
        mode=rng.choice(["previous", "nearest", "linear"]),
        tolerance=rng.choice([0.0, 0.05]),
        current_overbound=rng.choice([0.0, None, 0.3]),
        charge=rng.choice([1.5, -0.5]),
    )


# The CPU runs a delta synapse with per-weight delays either by scattering
# each spike's taps (sparse spikes) or by the direct convolution; the density
# of the spikes chooses, and DELAYCONV_SPIKE_EVENTS forces one of them.
@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("events", ["1", "0"])
@pytest.mark.parametrize("trial", range(8))
def test_both_delta_kernels_step_like_the_reference(
    trial, events, dtype, rng, monkeypatch
):
    monkeypatch.setenv("DELAYCONV_SPIKE_EVENTS", events)
    config = random_layer(rng, model=delta_model(rng), delay=rng.choice([1.1, 3.0]))
    run_both(config, dtype, "cpu", rng)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_delta_sequence_runs_like_the_reference(dtype, rng, monkeypatch):
    """At 3% density the density rule picks the event-driven kernel by itself
    (in step and sequence mode); forcing either kernel must not change the
    numbers."""
    config = random_layer(rng, model=delta_model(rng), delay=2.3, step_time=1.0)
    config = dataclasses.replace(
        config, batch_size=2, channels=3, height=29, width=31, filters=5, stride=(1, 1)
    )
    layer, _ = matched_layers(config, dtype, "cpu", uniform=False)
    steps = 2 * config.records + 3
    xs = random_input((steps, *config.input_shape), graded=False, density=0.03)
    xs = xs.to(dtype)
    outputs = {}
    for events in ("", "1", "0", "reference"):
        monkeypatch.setenv("DELAYCONV_SPIKE_EVENTS", events)
        conv = copy.deepcopy(layer)
        name = "reference" if events == "reference" else "compiled"
        with delayconv.backend(name), torch.no_grad():
            half = steps // 2
            stepped = torch.stack([conv(x) for x in xs[:half]])
            outputs[events] = torch.cat([stepped, conv.forward_sequence(xs[half:])])
    want = outputs.pop("reference")
    tolerance = TOLERANCE[dtype]
    scale = want.abs().max().item() + 1.0
    for got in outputs.values():
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance * scale)


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_compiled_step_handles_padding_beyond_the_maximum_delay(name, device, rng):
    """Padding read at delays past the maximum gives the overbound value."""
    model = ModelConfig(
        name,
        mode="nearest",
        tolerance=0.0,
        current_overbound=0.7,
        taus={
            "SingleExponentialCurrent": (3.0,),
            "DoubleExponentialCurrent": (6.0, 2.0),
        }.get(name, ()),
    )
    config = random_layer(
        rng, model=model, delay=1.5, step_time=0.5, padding=(2, 1), batch_size=2
    )
    compiled, referenced = matched_layers(config, torch.float64, device, False)
    for _ in range(config.records + 2):
        x = step_input(config, torch.float64, device, "graded")
        extra = ()
        if name == "DeltaPlusCurrent":
            extra = (
                torch.randn(config.input_shape, dtype=torch.float64, device=device),
            )
        with compiled_only():
            got = compiled(x, *extra)
        with delayconv.backend("reference"):
            want = referenced(x, *extra)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_backend_context_restores_the_previous_choice():
    assert delayconv.get_backend() == "auto"
    with delayconv.backend("reference"):
        assert delayconv.get_backend() == "reference"
        with pytest.raises(KeyError), delayconv.backend("compiled"):
            assert delayconv.get_backend() == "compiled"
            raise KeyError("inside")
        assert delayconv.get_backend() == "reference"
    assert delayconv.get_backend() == "auto"
    with pytest.raises(ValueError, match=r"'name'.*'fast'"):
        delayconv.set_backend("fast")
    assert delayconv.get_backend() == "auto"


def test_unsupported_dtypes_fall_back_or_refuse(rng, monkeypatch):
    """bfloat16 has no CPU kernel: ``auto`` warns once and uses the reference,
    ``compiled`` refuses."""
    monkeypatch.setattr(delayconv._dispatch, "_warned", set())
    config = random_layer(rng, model=ModelConfig("DeltaCurrent"), delay=1.0)
    config = dataclasses.replace(config, step_time=0.5)
    layer = config.build().to(torch.bfloat16)
    x = random_input(config.input_shape, graded=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = layer(x)
        layer(x)
    slow = [w for w in caught if "Falling back" in str(w.message)]
    assert len(slow) == 1 and "bfloat16" in str(slow[0].message)
    assert first.dtype == torch.bfloat16

    with pytest.raises(RuntimeError, match="float32 or float64"), compiled_only():
        layer(x)

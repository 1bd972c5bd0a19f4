"""The synaptic state: its size, saving and loading, clearing, resizing, and
running a whole sequence at once.

The state of a delayed layer is one ring of ``R = ceil(D / dt) + 1`` observations
of ``B x C x H x W`` per recorded quantity: spikes as one byte, each recorded
current in the weight dtype. Nothing in it grows with the kernel or the number
of filters.
"""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from .conftest import (
    DEVICES,
    MODELS,
    assert_same_state,
    model_config,
    random_delays,
    random_input,
    random_layer,
    snapshot,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def run(layer, steps: int, config, graded: bool = True) -> list[torch.Tensor]:
    """Feeds ``steps`` fresh random inputs (plus injected currents for the
    delta-plus model) and returns the outputs."""
    device, dtype = layer.weight.device, layer.weight.dtype
    outputs = []
    for _ in range(steps):
        x = random_input(config.input_shape, graded=graded).to(device)
        extra = ()
        if config.model.name == "DeltaPlusCurrent":
            extra = (torch.randn(config.input_shape, dtype=dtype, device=device),)
        outputs.append(layer(x, *extra))
    return outputs


def same_inputs(count: int, config, dtype=torch.float32, device="cpu"):
    """``count`` steps of input, each a tuple of the tensors forward takes."""
    steps = []
    for _ in range(count):
        x = random_input(config.input_shape, graded=True, dtype=dtype).to(device)
        extra = ()
        if config.model.name == "DeltaPlusCurrent":
            extra = (torch.randn(config.input_shape, dtype=dtype, device=device),)
        steps.append((x, *extra))
    return steps


def delayed_layer(config, dtype=torch.float32, device="cpu"):
    layer = config.build().to(device=device, dtype=dtype)
    if config.delay is not None:
        delays = random_delays(tuple(layer.delay.shape), config.delay, config.step_time)
        layer.delay = delays.to(device=device, dtype=dtype)
    return layer


def twin(layer, config, **changes):
    """A fresh layer built from ``config`` (with ``changes``) and ``layer``'s
    parameters, its state at rest."""
    config = dataclasses.replace(config, **changes)
    other = config.build().to(device=layer.weight.device, dtype=layer.weight.dtype)
    other.weight = layer.weight.detach().clone()
    other.bias = None if layer.bias is None else layer.bias.detach().clone()
    if layer.delay is not None:
        other.delay = layer.delay.detach().clone()
    return other


# ----- memory ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", MODELS)
def test_state_is_one_ring_per_recorded_quantity(name, dtype, rng):
    model = model_config(name)
    config = random_layer(rng, model=model, delay=rng.choice([2.3, 3.0]))
    layer = delayed_layer(config, dtype)
    run(layer, 3, config)

    records = math.ceil(config.delay / config.step_time) + 1
    pixels = config.batch_size * config.channels * config.height * config.width
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected = records * pixels * (1 + model.recorded * itemsize)
    assert layer.synapse.records == records
    assert layer.synapse.state_bytes == expected

    # Every buffer of the layer together: the rings and a 0-d ring head.
    buffers = dict(layer.named_buffers())
    head = [b for b in buffers.values() if b.dim() == 0]
    assert len(head) == 1 and head[0].dtype == torch.int64
    total = sum(b.numel() * b.element_size() for b in buffers.values())
    assert total == expected + 8


@pytest.mark.parametrize("name", MODELS)
def test_state_does_not_grow_with_kernel_or_filters(name, rng):
    model = model_config(name)
    small = random_layer(
        rng, model=model, kernel=(1, 1), filters=1, delay=2.0, dilation=(1, 1)
    )
    large = dataclasses.replace(small, kernel=(3, 5), filters=7, padding=(1, 2))
    assert small.out_size != large.out_size or small.kernel != large.kernel
    layers = [delayed_layer(c) for c in (small, large)]
    for layer, config in zip(layers, (small, large), strict=True):
        run(layer, 2, config)
    assert layers[0].synapse.state_bytes == layers[1].synapse.state_bytes
    sizes = [
        {k: tuple(v.shape) for k, v in layer.synapse.state_dict().items()}
        for layer in layers
    ]
    assert sizes[0] == sizes[1]


# ----- saving and loading -----------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_a_reloaded_layer_continues_identically(name, device, rng):
    config = random_layer(rng, model=model_config(name, mode="nearest"), delay=2.3)
    layer = delayed_layer(config, device=device)
    # A step count that leaves the ring head away from slot 0.
    run(layer, config.records + 2, config)

    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    restored = config.build().to(device)
    restored.load_state_dict(torch.load(buffer))
    assert_same_state(snapshot(layer), restored)

    for step in same_inputs(config.records + 3, config, device=device):
        assert torch.equal(layer(*step), restored(*step))
    assert_same_state(snapshot(layer), restored)


# ----- clearing and resizing --------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_clear_returns_the_layer_to_rest(name, rng):
    config = random_layer(rng, model=model_config(name), delay=1.6)
    layer = delayed_layer(config)
    run(layer, 4, config)
    assert layer.synapse.spike_ring.any()
    parameters = {k: v.clone() for k, v in layer.named_parameters()}

    layer.clear()
    synapse = layer.synapse
    assert not synapse.spike_ring.any() and not synapse.current_ring.any()
    assert int(synapse.ring_head) == 0
    assert not layer.synspike.any() and not layer.syncurrent.any()
    for key, value in layer.named_parameters():
        assert torch.equal(value, parameters[key])

    fresh = twin(layer, config)
    for step in same_inputs(config.records + 2, config):
        torch.testing.assert_close(layer(*step), fresh(*step))


@pytest.mark.parametrize("name", MODELS)
def test_changing_the_batch_size_clears_the_state(name, rng):
    config = random_layer(rng, model=model_config(name), delay=2.0, batch_size=2)
    layer = delayed_layer(config)
    run(layer, 3, config)

    before = snapshot(layer)
    layer.batchsz = 2
    assert_same_state(before, layer)

    layer.batchsz = 3
    resized = dataclasses.replace(config, batch_size=3)
    assert layer.batchsz == 3 and layer.batched_inshape == resized.input_shape
    assert layer.synapse.spike_ring.shape == (config.records, *resized.input_shape)
    assert not layer.synapse.spike_ring.any() and not layer.synapse.current_ring.any()
    assert layer.selector.shape[0] == 3

    fresh = twin(layer, resized)
    for step in same_inputs(config.records + 2, resized):
        torch.testing.assert_close(layer(*step), fresh(*step))


@pytest.mark.parametrize("name", MODELS)
def test_changing_the_step_time_resizes_and_clears_the_ring(name, rng):
    config = random_layer(rng, model=model_config(name), delay=2.1, step_time=0.7)
    layer = delayed_layer(config)
    run(layer, 3, config)

    layer.dt = 0.4
    assert layer.dt == 0.4 and layer.synapse.dt == 0.4
    assert layer.synapse.records == math.ceil(2.1 / 0.4) + 1 == 7
    assert layer.synapse.spike_ring.shape[0] == 7
    assert not layer.synapse.spike_ring.any() and not layer.synapse.current_ring.any()

    rebuilt = dataclasses.replace(config, step_time=0.4)
    fresh = twin(layer, rebuilt)
    for step in same_inputs(9, rebuilt):
        torch.testing.assert_close(layer(*step), fresh(*step))


@pytest.mark.parametrize(
    ("start", "new", "step_time"),
    [(2.0, 3.5, 0.5), (3.0, 1.2, 0.5), (0.0, 2.0, 1.0), (2.0, 0.0, 0.7)],
)
def test_changing_the_maximum_delay_resizes_and_clears_the_ring(
    start, new, step_time, rng
):
    config = random_layer(
        rng, model=model_config("SingleExponentialCurrent"), delay=start
    )
    config = dataclasses.replace(config, step_time=step_time)
    layer = delayed_layer(config)
    layer.delay = random_delays(tuple(layer.delay.shape), max(start, new), step_time)
    run(layer, 3, config)

    layer.synapse.delay = new
    # R = ceil(D / dt) + 1; inferno sizes its record for D + dt instead.
    records = math.ceil(new / step_time) + 1
    assert layer.synapse.records == records
    assert layer.synapse.spike_ring.shape[0] == records
    assert layer.synapse.current_ring.shape[1] == records
    assert layer.delayedby == new
    assert not layer.synapse.spike_ring.any() and not layer.synapse.current_ring.any()

    rebuilt = dataclasses.replace(config, delay=new)
    fresh = twin(layer, rebuilt)
    assert fresh.synapse.records == records
    for step in same_inputs(records + 3, rebuilt):
        torch.testing.assert_close(layer(*step), fresh(*step))


# ----- sequences --------------------------------------------------------

SEQUENCE_MODES = [
    (name, mode)
    for name in MODELS
    for mode in ("previous", "nearest", "linear")
    if mode != "linear" or name.startswith("Delta")
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("length", ["short", "long"])
@pytest.mark.parametrize(("name", "mode"), SEQUENCE_MODES)
def test_forward_sequence_equals_a_loop_of_forward(name, mode, length, device, rng):
    model = model_config(
        name, mode=mode, tolerance=rng.choice([0.0, 0.05]), current_overbound=0.2
    )
    config = random_layer(rng, model=model, delay=2.6, step_time=0.6, bias=True)
    stepped = delayed_layer(config, torch.float64, device)
    sequenced = twin(stepped, config)
    records = config.records
    steps = max(records - 2, 1) if length == "short" else 2 * records + 1

    # Both continue from the same nonzero state.
    for step in same_inputs(2, config, torch.float64, device):
        torch.testing.assert_close(stepped(*step), sequenced(*step), rtol=1e-12, atol=0)

    inputs = same_inputs(steps, config, torch.float64, device)
    loop = torch.stack([stepped(*step) for step in inputs])
    stacked = [torch.stack(parts) for parts in zip(*inputs, strict=True)]
    together = sequenced.forward_sequence(*stacked)
    assert together.shape == (steps, *stepped.batched_outshape)
    torch.testing.assert_close(together, loop, rtol=1e-12, atol=1e-12)

    final, expected = sequenced.state_dict(), stepped.state_dict()
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=1e-12, atol=1e-12)


def test_an_empty_sequence_changes_nothing(rng):
    config = random_layer(
        rng, model=model_config("DoubleExponentialCurrent"), delay=1.5
    )
    layer = delayed_layer(config)
    run(layer, 2, config)
    before = snapshot(layer)
    out = layer.forward_sequence(torch.zeros(0, *config.input_shape))
    assert out.shape == (0, *layer.batched_outshape)
    assert_same_state(before, layer)

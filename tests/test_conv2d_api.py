"""Conv2D's public surface: inferno's own checks of this layer, and the API page.

The first group restates, in our words, what inferno's ``TestConv2D`` checks of
its Conv2D (reshaping round trips, the bias reduction, and the layer against
``torch.nn.Conv2d`` with and without a uniform delay), with odd geometry added.
The rest checks properties, parameters and views against inferno and the SPEC.
inferno's ``insize`` and ``outsize`` are methods; ours are properties.
"""

from __future__ import annotations

import inspect
import math

import inferno.neural as inferno_neural
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import delayconv

from .conftest import DEVICES, MODELS, model_config, random_input, random_layer

pytestmark = pytest.mark.usefixtures("single_thread")


def delta_layer(**kwargs) -> delayconv.Conv2D:
    """A layer as inferno's tests build it: unit charge, a tiny tolerance."""
    return delayconv.Conv2D(
        synapse=delayconv.DeltaCurrent.partialconstructor(1.0, "previous", 1e-7),
        **kwargs,
    )


def test_like_input_inverts_like_synaptic(rng):
    length, channels = rng.randint(12, 20), rng.randint(3, 5)
    batch = rng.randint(1, 5)
    conn = delta_layer(
        height=length,
        width=length,
        channels=channels,
        filters=rng.randint(2, 6),
        step_time=1.0,
        kernel=rng.randint(2, 4),
        batch_size=batch,
    )
    image = torch.rand(batch, channels, length, length)
    torch.testing.assert_close(
        conn.like_input(conn.like_synaptic(image)), image, rtol=0, atol=1e-6
    )


def test_postsynaptic_reduction_reshapes_to_bias(rng):
    batch, filters = rng.randint(1, 5), rng.randint(2, 6)
    conn = delta_layer(
        height=rng.randint(9, 14),
        width=rng.randint(9, 14),
        channels=rng.randint(1, 3),
        filters=filters,
        step_time=1.0,
        kernel=(3, 2),
        bias=True,
        weight_init=lambda w: torch.rand_like(w),
        batch_size=batch,
    )
    output = torch.rand(batch, *conn.outshape)
    reduced = conn.postsyn_receptive(output).sum(-1).sum(0)
    assert reduced.shape == (filters, 1, 1, 1)
    as_bias = conn.like_bias(reduced)
    assert as_bias.shape == conn.bias.shape
    torch.testing.assert_close(as_bias, output.sum(dim=(0, 2, 3)))


GEOMETRIES = {
    "plain": {},
    "odd": {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)},
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("biased", [True, False], ids=["biased", "unbiased"])
def test_undelayed_forward_is_a_convolution(biased, geometry, device, rng):
    height, width = rng.randint(10, 16), rng.randint(10, 16)
    channels, filters = rng.randint(2, 4), rng.randint(3, 6)
    kernel, batch = rng.randint(2, 4), rng.randint(1, 4)
    conn = delta_layer(
        height=height,
        width=width,
        channels=channels,
        filters=filters,
        step_time=1.0,
        kernel=kernel,
        batch_size=batch,
        bias=biased,
        **geometry,
    ).to(device)
    refconn = nn.Conv2d(channels, filters, kernel, bias=biased, **geometry).to(device)
    # Assigning a Parameter that requires grad replaces the data only.
    conn.weight = refconn.weight
    if biased:
        conn.bias = refconn.bias
    assert not conn.weight.requires_grad

    for _ in range(8):
        data = torch.rand(batch, channels, height, width, device=device) < 0.3
        with torch.no_grad():
            want = refconn(data.float())
        torch.testing.assert_close(conn(data), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("biased", [True, False], ids=["biased", "unbiased"])
def test_uniformly_delayed_forward_is_a_late_convolution(biased, geometry, device, rng):
    height, width = rng.randint(10, 16), rng.randint(10, 16)
    channels, filters = rng.randint(2, 4), rng.randint(3, 6)
    kernel, batch = rng.randint(2, 4), rng.randint(1, 4)
    delay = rng.randint(3, 6)
    conn = delta_layer(
        height=height,
        width=width,
        channels=channels,
        filters=filters,
        step_time=1.0,
        kernel=kernel,
        batch_size=batch,
        bias=biased,
        delay=float(delay),
        **geometry,
    ).to(device)
    refconn = nn.Conv2d(channels, filters, kernel, bias=biased, **geometry).to(device)
    conn.weight = refconn.weight
    if biased:
        conn.bias = refconn.bias
    conn.delay.fill_(delay)

    data = [
        torch.rand(batch, channels, height, width, device=device) < 0.3
        for _ in range(2 * delay + 1)
    ]
    outputs = [conn(d) for d in data]
    for step, out in enumerate(outputs):
        with torch.no_grad():
            if step >= delay:
                want = refconn(data[step - delay].float())
            else:
                # Before the first input arrives the ring holds zeros.
                want = refconn(torch.zeros_like(data[0], dtype=torch.float32))
        torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


def test_signature_matches_inferno():
    ours = inspect.signature(delayconv.Conv2D)
    theirs = inspect.signature(inferno_neural.Conv2D)
    assert list(ours.parameters) == list(theirs.parameters)
    for name, param in theirs.parameters.items():
        assert ours.parameters[name].kind == param.kind, name
        assert ours.parameters[name].default == param.default, name


def test_positional_arguments_stop_at_kernel(rng):
    synapse = delayconv.DeltaCurrent.partialconstructor(1.0)
    with pytest.raises(TypeError):
        delayconv.Conv2D(6, 6, 1, 1, 1.0, 3, 1, synapse=synapse)


@pytest.mark.parametrize("trial", range(4))
def test_shapes_and_sizes_match_inferno(trial, rng):
    config = random_layer(rng)
    ours, theirs = config.build(), config.build(inferno_neural)
    assert (
        ours.inshape == theirs.inshape == (config.channels, config.height, config.width)
    )
    assert ours.outshape == theirs.outshape == (config.filters, *config.out_size)
    assert ours.batched_inshape == theirs.batched_inshape
    assert ours.batched_outshape == theirs.batched_outshape
    assert ours.insize == theirs.insize() == math.prod(ours.inshape)
    assert ours.outsize == theirs.outsize() == math.prod(ours.outshape)
    assert ours.batchsz == theirs.batchsz == config.batch_size
    assert ours.dt == theirs.dt == config.step_time
    assert ours.biased == theirs.biased == config.bias
    assert ours.delayedby == theirs.delayedby
    assert ours.synapse.shape == theirs.synapse.shape

    # The formula agrees with what a convolution actually produces.
    out = F.conv2d(
        torch.rand(config.input_shape),
        torch.rand(config.filters, config.channels, *config.kernel),
        stride=config.stride,
        padding=config.padding,
        dilation=config.dilation,
    )
    assert tuple(out.shape[1:]) == ours.outshape
    assert tuple(ours(random_input(config.input_shape, False)).shape) == tuple(
        out.shape
    )


@pytest.mark.parametrize(
    ("bias", "delay"), [(False, None), (True, None), (False, 0.0), (True, 2.5)]
)
def test_parameters_are_registered_as_in_inferno(bias, delay, rng):
    config = random_layer(rng, bias=bias, delay=delay)
    ours, theirs = config.build(), config.build(inferno_neural)
    names = [name for name, _ in ours.named_parameters()]
    assert names == [name for name, _ in theirs.named_parameters()]
    assert [k for k in ours.state_dict() if not k.startswith("synapse_")] == names

    kernel_shape = (config.filters, config.channels, *config.kernel)
    assert ours.weight is ours.weight_
    assert ours.weight.shape == kernel_shape
    assert ours.weight.min() >= 0 and ours.weight.max() < 1
    assert ours.weight.unique().numel() > 1
    for param in ours.parameters():
        assert isinstance(param, nn.Parameter) and not param.requires_grad
    if bias:
        assert ours.bias is ours.bias_ and ours.bias.shape == (config.filters,)
        assert ours.bias.min() >= 0 and ours.bias.max() < 1
    else:
        assert ours.bias is None and not ours.biased
    if delay is None:
        assert ours.delay is None and ours.delayedby is None
    else:
        assert ours.delay is ours.delay_ and ours.delay.shape == kernel_shape
        assert torch.all(ours.delay == 0)
        assert ours.delayedby == delay


def test_initializers_receive_the_defaults(rng):
    seen = {}

    def recorder(name, offset):
        def init(tensor):
            seen[name] = tensor.detach().clone()
            return tensor + offset

        return init

    config = random_layer(rng, bias=True, delay=3.0)
    conn = config.build(
        weight_init=recorder("weight", -0.5),
        bias_init=recorder("bias", 2.0),
        delay_init=recorder("delay", 1.25),
    )
    assert seen["weight"].shape == conn.weight.shape
    assert seen["weight"].min() >= 0 and seen["weight"].max() < 1
    torch.testing.assert_close(conn.weight.data, seen["weight"] - 0.5)
    assert seen["bias"].min() >= 0 and seen["bias"].max() < 1
    torch.testing.assert_close(conn.bias.data, seen["bias"] + 2.0)
    assert torch.all(seen["delay"] == 0)
    assert torch.all(conn.delay == 1.25)
    assert isinstance(conn.weight, nn.Parameter) and not conn.delay.requires_grad


def test_absent_bias_and_delay_ignore_their_setters(rng):
    config = random_layer(rng, bias=False, delay=None)
    conn = config.build()
    conn.bias = torch.rand(config.filters)
    conn.delay = torch.rand(config.filters, config.channels, *config.kernel)
    assert conn.bias is None and conn.delay is None
    assert "bias_" not in conn.state_dict() and "delay_" not in conn.state_dict()


def test_setters_replace_data_in_place(rng):
    config = random_layer(rng, bias=True, delay=2.0)
    conn = config.build()
    weight, bias, delay = conn.weight, conn.bias, conn.delay
    new = [torch.rand_like(p) + 1.0 for p in (weight, bias, delay)]
    conn.weight, conn.bias, conn.delay = (nn.Parameter(new[0]), new[1], new[2])
    assert conn.weight is weight and conn.bias is bias and conn.delay is delay
    for param, value in zip((weight, bias, delay), new, strict=True):
        assert torch.equal(param.data, value)


def test_selector_is_an_expanded_view_of_the_delays(rng):
    config = random_layer(rng, delay=3.0, batch_size=3)
    conn = config.build(delay_init=lambda d: torch.rand_like(d) * 3.0)
    n, fields = config.channels * math.prod(config.kernel), math.prod(config.out_size)
    selector = conn.selector
    assert selector.shape == (3, n, fields, config.filters)
    columns = conn.delay.reshape(config.filters, n).t()
    for b in range(3):
        for field in range(fields):
            assert torch.equal(selector[b, :, field, :], columns)
    # A view: the batch and field dimensions repeat one block of memory.
    assert selector.stride(0) == 0 and selector.stride(2) == 0
    assert selector.data_ptr() == conn.delay.data_ptr()
    with torch.no_grad():
        conn.delay.add_(0.5)
    assert torch.equal(selector[0, :, 0, :], conn.delay.reshape(config.filters, n).t())


def test_selector_without_delays_is_zero(rng):
    conn = random_layer(rng, delay=None).build()
    assert conn.selector.shape[-1] == conn.outshape[0]
    assert torch.all(conn.selector == 0)


@pytest.mark.parametrize("name", MODELS)
def test_undelayed_views_are_the_latest_state(name, rng):
    config = random_layer(rng, model=model_config(name), delay=None)
    conn = config.build()
    x = random_input(config.input_shape, graded=True)
    conn(x)
    assert conn.syncurrent.shape == (config.batch_size, *conn.synapse.shape)
    assert torch.equal(conn.syncurrent, conn.synapse.current)
    assert torch.equal(conn.synspike, conn.like_synaptic(x != 0))


def test_zero_maximum_delay_keeps_delays_unused_until_raised(rng):
    config = random_layer(
        rng, model=model_config("DeltaCurrent"), delay=0.0, step_time=1.0
    )
    conn = config.build(delay_init=lambda d: torch.full_like(d, 2.0))
    assert conn.delayedby == 0.0 and conn.synapse.records == 1
    inputs = [random_input(config.input_shape, graded=False) for _ in range(5)]

    def conv(x):
        current = x.float() * (config.model.charge / config.step_time)
        return F.conv2d(
            current,
            conn.weight,
            conn.bias,
            stride=config.stride,
            padding=config.padding,
            dilation=config.dilation,
        )

    for x in inputs:
        torch.testing.assert_close(conn(x), conv(x))

    conn.synapse.delay = 2.0
    assert conn.delayedby == 2.0 and conn.synapse.records == 3
    outputs = [conn(x) for x in inputs]
    for step in range(2, 5):
        torch.testing.assert_close(outputs[step], conv(inputs[step - 2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_output_takes_the_weight_dtype(dtype, device, rng):
    config = random_layer(rng, delay=2.0)
    conn = config.build().to(device=device, dtype=dtype)
    for x in (
        random_input(config.input_shape, graded=False),
        random_input(config.input_shape, graded=True, dtype=torch.float16),
        torch.randint(0, 3, config.input_shape, dtype=torch.int32),
    ):
        out = conn(x.to(device))
        assert out.dtype == dtype and out.device.type == device

"""Caller mistakes: every bad argument raises a TypeError or ValueError that names
the argument, states the rule and shows what came, and changes nothing.

A wrong type (a float or bool where an int belongs, a string for a number) is a
TypeError; a value of the right type outside its range is a ValueError.
inferno accepts ``3.0`` for an int argument; delayconv refuses it.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import delayconv

from .conftest import (
    DEVICES,
    assert_same_state,
    model_config,
    random_input,
    snapshot,
)

pytestmark = pytest.mark.usefixtures("single_thread")

SYNAPSE = delayconv.DeltaCurrent.partialconstructor(1.0)
GOOD = {
    "height": 7,
    "width": 6,
    "channels": 2,
    "filters": 3,
    "step_time": 0.5,
    "kernel": (3, 2),
    "synapse": SYNAPSE,
}

# (argument, bad value, exception, what the message must show of the value)
CONSTRUCTOR_CASES = [
    ("height", 0, ValueError, "0"),
    ("height", -3, ValueError, "-3"),
    ("height", 7.0, TypeError, "7.0"),
    ("width", True, TypeError, "True"),
    ("width", "6", TypeError, "'6'"),
    ("channels", 0, ValueError, "0"),
    ("channels", 2.0, TypeError, "2.0"),
    ("filters", -1, ValueError, "-1"),
    ("filters", None, TypeError, "None"),
    ("step_time", 0.0, ValueError, "0.0"),
    ("step_time", -0.5, ValueError, "-0.5"),
    ("step_time", float("inf"), ValueError, "inf"),
    ("step_time", float("nan"), ValueError, "nan"),
    ("step_time", "0.5", TypeError, "'0.5'"),
    ("step_time", True, TypeError, "True"),
    ("kernel", 0, ValueError, "0"),
    ("kernel", (3, 0), ValueError, "0"),
    ("kernel", (3, 2, 1), ValueError, "(3, 2, 1)"),
    ("kernel", (3,), ValueError, "(3,)"),
    ("kernel", 3.0, TypeError, "3.0"),
    ("kernel", (3, 2.0), TypeError, "2.0"),
    ("kernel", False, TypeError, "False"),
    ("stride", 0, ValueError, "0"),
    ("stride", (1, -1), ValueError, "-1"),
    ("stride", "2", TypeError, "'2'"),
    ("stride", torch.tensor(2), TypeError, "tensor"),
    ("padding", -1, ValueError, "-1"),
    ("padding", (0, -2), ValueError, "-2"),
    ("padding", 1.0, TypeError, "1.0"),
    ("padding", [1, 1, 1], ValueError, "[1, 1, 1]"),
    ("dilation", 0, ValueError, "0"),
    ("dilation", (2, 0), ValueError, "0"),
    ("dilation", (True, 1), TypeError, "True"),
    ("synapse", 3, TypeError, "int"),
    ("synapse", "DeltaCurrent", TypeError, "str"),
    ("bias", 1, TypeError, "1"),
    ("bias", "yes", TypeError, "'yes'"),
    ("bias", None, TypeError, "None"),
    ("delay", -1.0, ValueError, "-1.0"),
    ("delay", float("nan"), ValueError, "nan"),
    ("delay", "2", TypeError, "'2'"),
    ("delay", True, TypeError, "True"),
    ("batch_size", 0, ValueError, "0"),
    ("batch_size", 2.0, TypeError, "2.0"),
    ("batch_size", True, TypeError, "True"),
]


def check_message(error: pytest.ExceptionInfo, name: str, shown: str) -> None:
    message = str(error.value)
    assert re.search(rf"'{re.escape(name)}(\[\d\])?'", message), message
    assert shown in message, message
    assert re.search(r"must|expected", message), message


@pytest.mark.parametrize(
    ("name", "value", "error", "shown"),
    CONSTRUCTOR_CASES,
    ids=[f"{c[0]}={c[1]!r}" for c in CONSTRUCTOR_CASES],
)
def test_constructor_refuses_bad_arguments(name, value, error, shown):
    with pytest.raises(error) as caught:
        delayconv.Conv2D(**{**GOOD, name: value})
    check_message(caught, name, shown)


@pytest.mark.parametrize("name", ["weight_init", "bias_init", "delay_init"])
def test_initializers_must_be_callable(name):
    with pytest.raises(TypeError) as caught:
        delayconv.Conv2D(**GOOD, bias=True, delay=1.0, **{name: 3})
    check_message(caught, name, "3")


INITIALIZER_CASES = [
    ("weight_init", "weight", lambda t: t[0], ValueError, "(2, 3, 2)"),
    ("weight_init", "weight", lambda t: t.long(), TypeError, "int64"),
    ("bias_init", "bias", lambda t: t.unsqueeze(0), ValueError, "(1, 3)"),
    ("delay_init", "delay", lambda t: [0.0], TypeError, "list"),
]


@pytest.mark.parametrize(
    ("argument", "name", "init", "error", "shown"),
    INITIALIZER_CASES,
    ids=[f"{c[0]}-{c[3].__name__}" for c in INITIALIZER_CASES],
)
def test_initializers_must_return_matching_tensors(argument, name, init, error, shown):
    with pytest.raises(error) as caught:
        delayconv.Conv2D(**GOOD, bias=True, delay=1.0, **{argument: init})
    check_message(caught, name, shown)


@pytest.mark.parametrize(
    "geometry",
    [
        {"kernel": 8},
        {"kernel": (3, 2), "dilation": (4, 1)},
        {"kernel": (7, 7)},
        {"kernel": (3, 3), "dilation": (2, 4), "padding": (0, 1)},
    ],
)
def test_an_empty_output_is_refused_at_construction(geometry):
    with pytest.raises(ValueError, match="empty") as caught:
        delayconv.Conv2D(**{**GOOD, **geometry})
    assert "7 x 6" in str(caught.value)


def test_a_kernel_that_just_fits_gives_one_row():
    # Height 7 holds a kernel of 3 dilated by 3 exactly; width 6 with padding 1
    # holds one of 2 dilated by 7.
    conv = delayconv.Conv2D(**GOOD, dilation=(3, 7), padding=(0, 1))
    assert conv.outshape == (3, 1, 1)


def test_a_constructor_that_makes_no_module_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError) as caught:
            delayconv.Conv2D(**{**GOOD, "synapse": lambda *args: "not a synapse"})
    check_message(caught, "synapse", "str")


DELTA = {"spike_charge": 1.0}
SINGLE = {"spike_charge": 1.0, "time_constant": 4.0}
DOUBLE = {"spike_charge": 1.0, "tc_decay": 5.0, "tc_rise": 2.0}

# (model, argument, arguments, exception, what the message must show)
SYNAPSE_CASES = [
    ("DeltaCurrent", "spike_charge", {"spike_charge": 0.0}, ValueError, "0.0"),
    ("DeltaCurrent", "spike_charge", {"spike_charge": "1"}, TypeError, "'1'"),
    ("DeltaCurrent", "interp_mode", {"interp_mode": "cubic"}, ValueError, "'cubic'"),
    ("DeltaCurrent", "interp_mode", {"interp_mode": 2}, TypeError, "2"),
    ("DeltaPlusCurrent", "interp_tol", {"interp_tol": -0.1}, ValueError, "-0.1"),
    ("DeltaPlusCurrent", "interp_tol", {"interp_tol": None}, TypeError, "None"),
    (
        "DeltaPlusCurrent",
        "current_overbound",
        {"current_overbound": "0"},
        TypeError,
        "'0'",
    ),
    ("DeltaCurrent", "spike_overbound", {"spike_overbound": 0.5}, TypeError, "0.5"),
    ("DeltaCurrent", "inplace", {"inplace": "no"}, TypeError, "'no'"),
    (
        "SingleExponentialCurrent",
        "time_constant",
        {"time_constant": 0.0},
        ValueError,
        "0.0",
    ),
    (
        "SingleExponentialCurrent",
        "time_constant",
        {"time_constant": -2.0},
        ValueError,
        "-2.0",
    ),
    (
        "SingleExponentialCurrent",
        "spike_interp_mode",
        {"spike_interp_mode": "later"},
        ValueError,
        "'later'",
    ),
    ("DoubleExponentialCurrent", "tc_decay", {"tc_decay": 2.0}, ValueError, "2.0"),
    ("DoubleExponentialCurrent", "tc_decay", {"tc_decay": 1.0}, ValueError, "1.0"),
    ("DoubleExponentialCurrent", "tc_rise", {"tc_rise": 0.0}, ValueError, "0.0"),
    ("DoubleExponentialCurrent", "spike_charge", {"spike_charge": 0}, ValueError, "0"),
]
DEFAULTS = {
    "DeltaCurrent": DELTA,
    "DeltaPlusCurrent": DELTA,
    "SingleExponentialCurrent": SINGLE,
    "DoubleExponentialCurrent": DOUBLE,
}


@pytest.mark.parametrize(
    ("model", "name", "arguments", "error", "shown"),
    SYNAPSE_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[3].__name__}" for c in SYNAPSE_CASES],
)
def test_synapse_constructors_refuse_bad_arguments(
    model, name, arguments, error, shown
):
    with pytest.raises(error) as caught:
        getattr(delayconv, model).partialconstructor(**{**DEFAULTS[model], **arguments})
    check_message(caught, name, shown)


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        (((2, 0), 1.0, 0.0, 1), ValueError, "shape[1]"),
        ((3, 0.0, 0.0, 1), ValueError, "step_time"),
        ((3, 1.0, -1.0, 1), ValueError, "delay"),
        ((3, 1.0, 0.0, 0), ValueError, "batch_size"),
        ((3.0, 1.0, 0.0, 1), TypeError, "shape"),
    ],
)
def test_the_common_protocol_refuses_bad_arguments(args, error, name):
    constructor = delayconv.SingleExponentialCurrent.partialconstructor(1.0, 4.0)
    with pytest.raises(error) as caught:
        constructor(*args)
    assert f"'{name}'" in str(caught.value)


@pytest.fixture
def stepped_layer(device, rng):
    """A delayed, biased layer that has seen a few inputs, so that its state is
    not all zeros."""
    layer = delayconv.Conv2D(
        7,
        6,
        2,
        3,
        0.5,
        (3, 2),
        stride=(2, 1),
        padding=(1, 0),
        bias=True,
        delay=1.2,
        batch_size=2,
        synapse=model_config("DeltaPlusCurrent").constructor(),
        delay_init=lambda d: torch.rand_like(d) * 1.2,
    ).to(device)
    for _ in range(4):
        layer(random_input((2, 2, 7, 6), graded=True).to(device))
    assert layer.synapse.spike_ring.any() and layer.synapse.current_ring.any()
    return layer


def bad_inputs(device: str):
    good = torch.rand(2, 2, 7, 6, device=device)
    other = "meta" if device == "cpu" else "cpu"
    # (inputs, exception, words of the message)
    yield (good[0],), ValueError, ["'input'", "4-D", "(2, 2, 7, 6)", "(2, 7, 6)"]
    yield (good[None],), ValueError, ["'input'", "4-D", "5-D"]
    yield (good[:, :, :, :5],), ValueError, ["'input'", "(2, 2, 7, 6)", "(2, 2, 7, 5)"]
    yield (good[:, :1],), ValueError, ["'input'", "(2, 2, 7, 6)", "(2, 1, 7, 6)"]
    yield (good[:1],), ValueError, ["'input'", "batch 1", "batch size is 2"]
    yield (torch.cat([good, good]),), ValueError, ["'input'", "batch 4", "is 2"]
    complex_input = good.to(torch.complex64)
    yield (complex_input,), TypeError, ["'input'", "floating point", "complex64"]
    yield (good.to(other),), ValueError, ["'input'", "device", other]
    yield (good.tolist(),), TypeError, ["'input'", "torch.Tensor", "list"]
    yield (), TypeError, ["(2, 2, 7, 6)", "none"]
    injected = torch.ones(2, 2, 7, 6, dtype=torch.int64, device=device)
    yield (good, injected), TypeError, ["'injected current 1'", "floating", "int64"]
    yield (good, good[:, :, :6]), ValueError, ["'injected current 1'", "(2, 2, 6, 6)"]
    yield (good, good.to(other)), ValueError, ["'injected current 1'", other]


@pytest.mark.parametrize("device", DEVICES)
def test_forward_refuses_bad_inputs_and_keeps_its_state(stepped_layer, device):
    before = snapshot(stepped_layer)
    for inputs, error, words in bad_inputs(device):
        with pytest.raises(error) as caught:
            stepped_layer(*inputs)
        for word in words:
            assert word in str(caught.value), (word, str(caught.value))
        assert_same_state(before, stepped_layer)


@pytest.mark.parametrize("device", DEVICES)
def test_forward_sequence_refuses_bad_inputs_and_keeps_its_state(stepped_layer, device):
    before = snapshot(stepped_layer)
    good = torch.rand(3, 2, 2, 7, 6, device=device)
    cases = [
        ((good[0],), ValueError, ["'inputs'", "5-D", "4-D"]),
        ((good[:, :1],), ValueError, ["'inputs'", "batch 1", "is 2"]),
        ((good[..., :5],), ValueError, ["'inputs'", "(3, 2, 2, 7, 5)"]),
        ((good.to(torch.complex128),), TypeError, ["'inputs'", "complex128"]),
        ((good, good[:2]), ValueError, ["'injected current 1'", "(2, 2, 2, 7, 6)"]),
        ((good, good.long()), TypeError, ["'injected current 1'", "int64"]),
        (("x",), ValueError, ["'inputs'", "5-D", "str"]),
    ]
    for inputs, error, words in cases:
        with pytest.raises(error) as caught:
            stepped_layer.forward_sequence(*inputs)
        for word in words:
            assert word in str(caught.value), (word, str(caught.value))
        assert_same_state(before, stepped_layer)


SETTER_CASES = [
    ("batchsz", 0, ValueError, "0"),
    ("batchsz", 2.0, TypeError, "2.0"),
    ("batchsz", True, TypeError, "True"),
    ("dt", 0.0, ValueError, "0.0"),
    ("dt", -1, ValueError, "-1"),
    ("dt", "0.5", TypeError, "'0.5'"),
]


@pytest.mark.parametrize("device", ["cpu"])
@pytest.mark.parametrize(
    ("name", "value", "error", "shown"),
    SETTER_CASES,
    ids=[f"{c[0]}={c[1]!r}" for c in SETTER_CASES],
)
def test_setters_refuse_bad_values_and_keep_the_state(
    stepped_layer, name, value, error, shown
):
    before = snapshot(stepped_layer)
    with pytest.raises(error) as caught:
        setattr(stepped_layer, name, value)
    check_message(caught, name, shown)
    assert_same_state(before, stepped_layer)


@pytest.mark.parametrize("device", ["cpu"])
@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [(-0.5, ValueError, "-0.5"), ("1", TypeError, "'1'"), (None, TypeError, "None")],
)
def test_synapse_delay_setter_refuses_bad_values(stepped_layer, value, error, shown):
    before = snapshot(stepped_layer)
    with pytest.raises(error) as caught:
        stepped_layer.synapse.delay = value
    check_message(caught, "delay", shown)
    assert_same_state(before, stepped_layer)
    assert stepped_layer.delayedby == 1.2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["weight", "bias", "delay"])
def test_parameter_setters_refuse_mismatched_tensors(stepped_layer, name, device):
    before = snapshot(stepped_layer)
    current = getattr(stepped_layer, name)
    other = "meta" if device == "cpu" else "cpu"
    shape = tuple(current.shape)
    cases = [
        (torch.rand(*shape, 2, device=device), ValueError, str((*shape, 2))),
        (torch.rand(shape[1:], device=device), ValueError, str(shape[1:])),
        (torch.ones(shape, dtype=torch.int32, device=device), TypeError, "int32"),
        (torch.rand(shape, device=other), ValueError, other),
        (current.tolist(), TypeError, "list"),
    ]
    for value, error, shown in cases:
        with pytest.raises(error) as caught:
            setattr(stepped_layer, name, value)
        check_message(caught, name, shown)
        assert_same_state(before, stepped_layer)


@pytest.mark.parametrize("device", ["cpu"])
def test_selectors_must_be_float_and_shaped_like_the_synapse(stepped_layer):
    synapse = stepped_layer.synapse
    good = torch.rand(synapse.batchedshape)
    with pytest.raises(TypeError, match=r"'selector'.*int64"):
        synapse.current_at(good.long())
    with pytest.raises(ValueError, match=re.escape(str(synapse.batchedshape))):
        synapse.spike_at(good[..., :-1, None])
    with pytest.raises(ValueError, match="'selector'"):
        synapse.current_at(good[0])
    with pytest.raises(ValueError, match="'data'"):
        stepped_layer.like_bias(torch.rand(3, 1, 1))
    with pytest.raises(ValueError, match="'data'"):
        stepped_layer.presyn_receptive(torch.rand(2, 12))

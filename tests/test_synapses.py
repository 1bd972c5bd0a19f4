"""Synapses on their own, and foreign synapses inside Conv2D.

A delayconv synapse built through the common protocol
``(shape, step_time, delay, batch_size)`` keeps the given shape and must read
its past exactly as inferno's synapse of the same model does. Spikes are
compared with inferno only where its swapped tolerance and overbound cannot
matter, and otherwise with a direct reading of the recorded inputs.

A constructor that is not delayconv's (inferno's own, say) makes Conv2D fall
back to the unfolded generic path: slower, warned about once, same numbers.
"""

from __future__ import annotations

import inspect
import math
import warnings

import inferno.neural as inferno_neural
import pytest
import torch

import delayconv
import delayconv.conv

from .conftest import (
    MODELS,
    expected_spike_at,
    make_pair,
    model_config,
    random_input,
    random_layer,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name", MODELS)
def test_partial_constructors_take_inferno_arguments(name):
    ours = inspect.signature(getattr(delayconv, name).partialconstructor)
    theirs = inspect.signature(getattr(inferno_neural, name).partialconstructor)
    assert list(ours.parameters) == list(theirs.parameters)
    for key, param in theirs.parameters.items():
        assert ours.parameters[key].default == param.default, key


def drive(synapses, steps, shape, batch, name, graded):
    """Feeds the same fresh inputs to every synapse; checks they agree on the
    present after every step; returns the spike history, newest first."""
    history = []
    for _ in range(steps):
        x = random_input((batch, *shape), graded=graded)
        extra = (torch.randn(batch, *shape),) if name == "DeltaPlusCurrent" else ()
        results = [synapse(x, *extra) for synapse in synapses]
        for result in results[1:]:
            torch.testing.assert_close(result, results[0], rtol=1e-6, atol=1e-6)
        history.insert(0, x != 0)
    return history


def random_selector(shape, max_delay, step_time, count=None):
    """Fractional delays over ``[-0.3, 1.3 D + 0.5)``: some exactly on steps,
    some beyond the maximum and some below zero."""
    full = shape if count is None else (*shape, count)
    selector = torch.rand(full) * (1.3 * max_delay + 0.8) - 0.3
    flat = selector.view(-1)
    flat[1::4] = torch.randint(
        0, math.ceil(max_delay / step_time) + 1, flat[1::4].shape
    )
    flat[1::4] *= step_time
    flat[0], flat[-1] = max_delay + 0.4, -0.2
    return selector


def read_each(read, selector, count):
    """inferno's reading of ``selector`` one trailing slice at a time: with a
    single observation (no delay) inferno ignores a trailing dimension of
    selectors and returns ``B x *S``, where delayconv (as SPEC section 3 says)
    returns one read per selector."""
    if count is None:
        return read(selector)
    return torch.stack([read(part) for part in selector.unbind(-1)], dim=-1)


SYNAPSE_OPTIONS = [
    {"tolerance": 0.0, "current_overbound": 0.0, "spike_overbound": False},
    {"tolerance": 0.0, "current_overbound": None, "spike_overbound": None},
    {"tolerance": 0.06, "current_overbound": 0.25, "spike_overbound": True},
    {"tolerance": 0.06, "current_overbound": None, "spike_overbound": False},
]


@pytest.mark.parametrize("options", range(len(SYNAPSE_OPTIONS)))
@pytest.mark.parametrize("mode", ["previous", "nearest"])
@pytest.mark.parametrize("name", MODELS)
def test_standalone_synapses_match_inferno(name, mode, options, rng):
    model = model_config(name, mode=mode, **SYNAPSE_OPTIONS[options])
    shape = rng.choice([(3, 4), (5,), (2, 3, 2)])
    step_time = rng.choice([0.7, 0.4])
    max_delay = rng.choice([2.3, 1.6, 0.0])
    batch = rng.randint(1, 3)
    protocol = (shape, step_time, max_delay, batch)
    ours = model.constructor()(*protocol)
    theirs = model.constructor(inferno_neural)(*protocol)
    assert ours.shape == theirs.shape == shape
    assert ours.batchedshape == theirs.batchedshape
    assert ours.dt == theirs.dt and ours.delay == theirs.delay

    records = math.ceil(max_delay / step_time) + 1
    assert ours.records == records
    history = drive(
        [ours, theirs], 2 * records + 3, shape, batch, name, rng.random() < 0.5
    )
    history = history[:records]
    torch.testing.assert_close(ours.current, theirs.current, rtol=1e-6, atol=1e-6)
    assert torch.equal(ours.spike, theirs.spike)
    assert torch.equal(ours.spike, history[0])

    for count in (None, 3):
        selector = random_selector((batch, *shape), max_delay, step_time, count)
        currents = ours.current_at(selector)
        assert currents.shape == selector.shape
        torch.testing.assert_close(
            currents,
            read_each(theirs.current_at, selector, count),
            rtol=1e-6,
            atol=1e-6,
        )
        if records > 1:
            want = theirs.current_at(selector)
            torch.testing.assert_close(currents, want, rtol=1e-6, atol=1e-6)
        spikes = ours.spike_at(selector)
        assert spikes.dtype == torch.bool and spikes.shape == selector.shape
        if model.spikes_comparable:
            assert torch.equal(spikes, read_each(theirs.spike_at, selector, count))
        trailing = selector if count else selector.unsqueeze(-1)
        expected = expected_spike_at(history, trailing, step_time, max_delay, model)
        assert torch.equal(spikes, expected if count else expected.squeeze(-1))

    if name == "DoubleExponentialCurrent":
        selector = random_selector((batch, *shape), max_delay, step_time, 2)
        for part in ("pos_current", "neg_current"):
            torch.testing.assert_close(getattr(ours, part), getattr(theirs, part))
            torch.testing.assert_close(
                getattr(ours, f"{part}_at")(selector),
                read_each(getattr(theirs, f"{part}_at"), selector, 2),
                rtol=1e-6,
                atol=1e-6,
            )


@pytest.mark.parametrize("name", MODELS)
def test_standalone_synapses_clear_and_resize(name, rng):
    model = model_config(name)
    synapse = model.constructor()((4, 3), 0.5, 1.2, 2)
    drive([synapse], 4, (4, 3), 2, name, graded=True)
    assert synapse.spike.any()

    synapse.clear()
    assert not synapse.spike.any() and not synapse.current.any()
    synapse.delay = 2.2
    assert synapse.records == math.ceil(2.2 / 0.5) + 1
    assert synapse.spike_ring.shape == (synapse.records, 2, 4, 3)
    synapse.dt = 0.3
    assert synapse.records == math.ceil(2.2 / 0.3) + 1
    synapse.batchsz = 3
    assert synapse.batchedshape == (3, 4, 3)
    assert synapse.spike_ring.shape == (synapse.records, 3, 4, 3)
    assert not synapse.spike_ring.any() and not synapse.current_ring.any()


# ----- foreign synapses in Conv2D ----------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forgets which foreign synapses Conv2D has already warned about."""
    monkeypatch.setattr(delayconv.conv, "_warned_generic", set())


def foreign_pair(config, constructor):
    """delayconv's Conv2D around ``constructor``, and inferno's own layer."""
    ours, theirs = make_pair(config)
    generic = config.build(synapse=constructor)
    generic.load_state_dict(
        {k: v for k, v in ours.state_dict().items() if not k.startswith("synapse_")},
        strict=False,
    )
    return generic, theirs


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("name", MODELS)
def test_inferno_synapses_take_the_generic_path(name, rng):
    model = model_config(name, mode="nearest", current_overbound=0.3)
    config = random_layer(rng, model=model, delay=1.8, bias=True)
    with pytest.warns(UserWarning, match=r"not a delayconv synapse.*slow"):
        generic, theirs = foreign_pair(config, model.constructor(inferno_neural))
    assert isinstance(generic.synapse, getattr(inferno_neural, name))

    for _ in range(2 * config.records + 3):
        x = random_input(config.input_shape, graded=True)
        extra = (torch.randn(config.input_shape),) if name == "DeltaPlusCurrent" else ()
        torch.testing.assert_close(generic(x, *extra), theirs(x, *extra))
    torch.testing.assert_close(generic.syncurrent, theirs.syncurrent)
    assert torch.equal(generic.synspike, theirs.synspike)

    with pytest.raises(TypeError, match="forward_sequence"):
        generic.forward_sequence(random_input((2, *config.input_shape), graded=False))


@pytest.mark.usefixtures("fresh_warnings")
def test_the_generic_path_warns_once_per_synapse_type(rng):
    config = random_layer(rng, model=model_config("DeltaCurrent"), delay=None)
    constructor = inferno_neural.DeltaCurrent.partialconstructor(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            config.build(synapse=constructor)
        config.build(synapse=inferno_neural.DeltaPlusCurrent.partialconstructor(1.0))
        config.build()
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert len(messages) == 2
    assert messages[0].startswith("DeltaCurrent is not a delayconv synapse")
    assert messages[1].startswith("DeltaPlusCurrent is not a delayconv synapse")


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("name", ["DeltaPlusCurrent", "SingleExponentialCurrent"])
def test_a_wrapped_delayconv_constructor_works_unfolded(name, rng):
    """A delayconv synapse made through the common protocol by some other
    callable holds the unfolded shape; the layer still computes the same."""
    model = model_config(name, mode="previous")
    config = random_layer(rng, model=model, delay=2.0, bias=True)
    compact, _ = make_pair(config)

    def wrapped(*protocol):
        return model.constructor()(*protocol)

    with pytest.warns(UserWarning, match="not a delayconv synapse"):
        generic = config.build(synapse=wrapped)
    parameters = {
        k: v for k, v in compact.state_dict().items() if not k.startswith("synapse_")
    }
    generic.load_state_dict(parameters, strict=False)
    assert generic.synapse.shape == compact.synapse.shape

    for _ in range(2 * config.records + 3):
        x = random_input(config.input_shape, graded=True)
        extra = (torch.randn(config.input_shape),) if name == "DeltaPlusCurrent" else ()
        torch.testing.assert_close(generic(x, *extra), compact(x, *extra))
    torch.testing.assert_close(generic.syncurrent, compact.syncurrent)
    assert torch.equal(generic.synspike, compact.synspike)

"""The demo's task generator, network and command line, at toy sizes."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from delayconv.demo.network import LIF, SpikeFunction
from delayconv.demo.task import DIRECTIONS, MotionTask
from delayconv.demo.train import (
    Cluster,
    TrainConfig,
    build_model,
    evaluate,
    make_optimizer,
    to_time_major,
    train_epoch,
)

TASK = MotionTask(size=8, steps=8, dots=2, noise=0.02)
CONFIG = TrainConfig(batch_size=16, filters=4, kernel=3, max_delay=2.0, seed=5)


def test_movies_are_dots_that_drift_with_the_label():
    task = MotionTask(size=7, steps=5, dots=2, speeds=(1, 2, 3), noise=0.0)
    movies, labels = task.generate(48, torch.Generator().manual_seed(0))

    assert movies.shape == (48, 5, 1, 7, 7) and movies.dtype == torch.bool
    assert torch.bincount(labels).tolist() == [4] * task.classes

    # Each frame is the previous one shifted by the velocity, wrapping round.
    for movie, label in zip(movies, labels, strict=True):
        direction, speed = divmod(int(label), len(task.speeds))
        velocity = [task.speeds[speed] * unit for unit in DIRECTIONS[direction]]
        for before, after in itertools.pairwise(movie):
            assert torch.equal(after, before.roll(velocity, dims=(-2, -1)))
        assert 1 <= int(movie[0].sum()) <= task.dots


def test_a_strobe_shows_the_dots_every_interval_steps_only():
    task = MotionTask(size=9, steps=7, dots=2, noise=0.0, interval=3)
    movies, labels = task.generate(16, torch.Generator().manual_seed(4))

    shown = torch.arange(task.steps) % task.interval == 0
    assert not movies[:, ~shown].any()
    for movie, label in zip(movies, labels, strict=True):
        direction, speed = divmod(int(label), len(task.speeds))
        jump = [3 * task.speeds[speed] * unit for unit in DIRECTIONS[direction]]
        for before, after in itertools.pairwise(movie[shown]):
            assert torch.equal(after, before.roll(jump, dims=(-2, -1)))


def test_noise_adds_background_spikes_at_its_rate():
    movies, _ = MotionTask(size=16, steps=20, dots=1, noise=0.1).generate(
        64, torch.Generator().manual_seed(1)
    )
    rate = movies.float().mean().item()
    assert 0.09 < rate < 0.12


def test_lif_spikes_and_resets_by_subtraction():
    lif = LIF(time_constant=1e-9, step_time=1.0, threshold=1.0)
    current = torch.tensor([0.5, 1.0, 2.5, 0.0]).view(4, 1)

    # With no memory left between steps, a neuron spikes where the current
    # alone reaches the threshold.
    assert lif(current).flatten().tolist() == [0.0, 1.0, 1.0, 0.0]


def test_surrogate_gradient_is_the_fast_sigmoid_derivative():
    distance = torch.tensor([-1.0, 0.0, 0.5], requires_grad=True)
    SpikeFunction.apply(distance, 2.0).sum().backward()
    expected = 1 / (1 + 2.0 * distance.detach().abs()) ** 2
    torch.testing.assert_close(distance.grad, expected)


@pytest.mark.parametrize("variant", ["learned", "zero", "random"])
def test_variants_differ_only_in_their_delays(variant):
    learned = build_model("learned", TASK.size, TASK.classes, CONFIG)
    model = build_model(variant, TASK.size, TASK.classes, CONFIG)

    torch.testing.assert_close(model.conv.weight, learned.conv.weight)
    assert model.conv.delay.requires_grad == (variant == "learned")
    if variant == "zero":
        assert not model.conv.delay.any()
    else:
        torch.testing.assert_close(model.conv.delay, learned.conv.delay)
        assert model.conv.delay.min() >= 0
        assert model.conv.delay.max() <= CONFIG.max_delay


def test_a_short_training_learns_and_learns_delays():
    generator = torch.Generator().manual_seed(2)
    train_data = TASK.generate(64, generator)
    test_data = TASK.generate(64, generator)
    model = build_model("learned", TASK.size, TASK.classes, CONFIG)
    optimizer = make_optimizer(model, CONFIG)
    start_delays = model.conv.delay.detach().clone()

    def full_loss() -> float:
        with torch.no_grad():
            movies, labels = train_data
            return F.cross_entropy(model(to_time_major(movies, "cpu")), labels).item()

    before = full_loss()
    for epoch in range(2):
        train_epoch(model, model, optimizer, train_data, CONFIG, epoch, Cluster())
    after = full_loss()
    accuracy = evaluate(model, test_data, 32, Cluster())

    assert after < before or accuracy > 1 / TASK.classes
    assert not torch.equal(model.conv.delay, start_delays)
    assert model.conv.delay.min() >= 0
    assert model.conv.delay.max() <= CONFIG.max_delay


def test_command_line_runs_and_writes_the_figure(tmp_path, capsys):
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    from delayconv.demo.__main__ import main

    output = tmp_path / "results.png"
    main(
        [
            "--epochs=1",
            "--train-samples=32",
            "--test-samples=16",
            "--batch-size=16",
            "--size=8",
            "--steps=6",
            "--filters=2",
            "--max-delay=2",
            f"--output={output}",
        ]
    )

    printed = capsys.readouterr().out
    for variant in ("learned", "zero", "random"):
        assert f"{variant} delays" in printed
    assert "PyTorch oracle" in printed
    assert output.stat().st_size > 0

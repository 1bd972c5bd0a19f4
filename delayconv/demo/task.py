"""The demo's task: the direction and speed of dots drifting across a frame.

Each sample is a short spike movie of a small square frame in which a few dots
drift together, wrapping around the edges, in one of four directions at one of
a few speeds. A frame holds only where the dots are now, never a trail, and the
dots start at random places, so any single frame is the same random scatter
whatever the class: the class lies only in which pixels light up one after
another. A convolution whose weights read their pixels at different delays can
line those pixels up in time; one without delays sees a frame at a time.

Background spikes, a few per frame, make the movies noisy, so that telling the
motions apart takes several aligned dots (a coincidence) rather than any trace
of the previous frame. A strobe (``interval`` > 1) shows the dots only every
few steps, so that the motion lies only in pixels lit further apart in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Unit steps (rows, columns) of the four directions, in class order.
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))
DIRECTION_NAMES = ("right", "left", "down", "up")


@dataclass(frozen=True)
class MotionTask:
    """How the movies are drawn.

    Attributes:
        size: height and width of the frame, in pixels.
        steps: frames per movie ``T``, one per simulation step.
        dots: dots per movie; they all move with the same velocity.
        speeds: the speeds to tell apart, in pixels per step.
        noise: probability that a pixel spikes at a step, dot or no dot.
        interval: steps between frames that show the dots; the steps between
            show background spikes only, like a strobe.
    """

    size: int = 16
    steps: int = 20
    dots: int = 3
    speeds: tuple[int, ...] = (1, 2)
    noise: float = 0.02
    interval: int = 1

    @property
    def classes(self) -> int:
        """Number of classes: every direction at every speed."""
        return len(DIRECTIONS) * len(self.speeds)

    def class_name(self, label: int) -> str:
        """A label as words, e.g. ``"left at 2 px/step"``."""
        direction, speed = divmod(label, len(self.speeds))
        return f"{DIRECTION_NAMES[direction]} at {self.speeds[speed]} px/step"

    def generate(
        self, samples: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws ``samples`` movies with balanced, shuffled labels.

        Args:
            samples: number of movies ``N``.
            generator: the source of randomness, for reproducible sets.

        Returns:
            ``(movies, labels)``: movies ``N x T x 1 x size x size`` bool (a
            pixel is True where a dot is at that step), labels ``N`` int64 in
            ``[0, classes)``, class ``direction * len(speeds) + speed index``.
        """
        # Balanced classes, so that chance is exactly 1 / classes.
        labels = torch.arange(samples) % self.classes
        labels = labels[torch.randperm(samples, generator=generator)]

        direction, speed_index = labels // len(self.speeds), labels % len(self.speeds)
        unit = torch.tensor(DIRECTIONS)[direction]
        speed = torch.tensor(self.speeds)[speed_index]
        velocity = unit * speed[:, None]

        # Positions N x T x dots x 2, wrapped onto the frame.
        start = torch.randint(
            0, self.size, (samples, 1, self.dots, 2), generator=generator
        )
        time = torch.arange(self.steps).view(1, -1, 1, 1)
        position = (start + time * velocity.view(-1, 1, 1, 2)) % self.size

        flat = position[..., 0] * self.size + position[..., 1]
        movies = torch.zeros(
            samples, self.steps, self.size * self.size, dtype=torch.bool
        )
        movies.scatter_(2, flat, True)
        movies[:, torch.arange(self.steps) % self.interval != 0] = False

        # Background spikes, independent of the class and of one another.
        shape = (samples, self.steps, self.size * self.size)
        movies |= torch.rand(shape, generator=generator) < self.noise
        return movies.view(samples, self.steps, 1, self.size, self.size), labels

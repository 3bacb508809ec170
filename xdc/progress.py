"""How far a pretraining is and how long it has left, from its own measured pace.

A round is two kinds of work: its beginning (every video's features extracted, then clustered) and its training
steps. Their costs differ, and both change with the machine's load, so each is measured apart: the steps over about
the last epoch (the loader's start-up and the checkpoint included, as every epoch pays them), a beginning as the last
one took. The time a run spends loading its data and starting counts for neither. Until half an epoch of steps has
been measured there is no ETA: dividing the start-up and the first round's clustering by a handful of steps is what
read 2027 s with 351 s left.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# An ETA needs this share of an epoch's steps measured (at most MEASURED_STEPS): the first steps of an epoch carry
# its loader's start-up, which a longer stretch spreads as the whole epoch will.
MEASURED_EPOCH = 0.5
MEASURED_STEPS = 200
# A round's beginning in training steps' worth, per batch of clips it extracts, until one has been measured (a run
# resumed inside a round): extraction decodes as training does and runs the encoders forward only (the demo's 45
# batches a round: 7 s guessed, 6 to 7 s measured once the first round had warmed the page cache, 2026-12-05).
EXTRACT_BATCH_STEPS = 0.5


class Pace:
    """Measures a run's steps and round beginnings on `clock`, and says the fraction done and the seconds left."""

    def __init__(self, *, rounds: int, total_steps: int, window_steps: int, begin_batches: float,
                 clock: Callable[[], float] = time.monotonic):
        self.rounds = rounds
        self.total_steps = max(1, total_steps)
        self.window_steps = max(1, window_steps)
        self.begin_guess = begin_batches * EXTRACT_BATCH_STEPS  # in steps
        self.clock = clock
        self.needed = max(1, min(int(self.window_steps * MEASURED_EPOCH), MEASURED_STEPS))
        self.started_at = 0  # the global step this attempt's training started at
        self.samples: deque[tuple[float, int]] = deque()  # (seconds spent training, global step)
        self.begin_seconds: list[float] = []
        self.paused = 0.0  # seconds spent beginning rounds, kept off the steps' clock
        self.beginning = False
        self.shown = 0.0

    def start(self, step: int) -> None:
        """Training (re)starts at global `step`: the steps' clock runs from here."""
        self.started_at = step
        self.samples.clear()
        self.samples.append((self._training_clock(), step))

    @contextmanager
    def round_beginning(self) -> Iterator[None]:
        """Times a round's beginning (one that is stopped midway is not a measurement)."""
        began = self.clock()
        self.beginning = True
        try:
            yield
            self.begin_seconds.append(self.clock() - began)
        finally:
            self.beginning = False
            self.paused += self.clock() - began

    def reached(self, step: int) -> None:
        """Training has reached global `step`; the samples keep the newest one at least a window back."""
        if self.beginning or not self.samples or step <= self.samples[-1][1]:
            return
        self.samples.append((self._training_clock(), step))
        while len(self.samples) > 2 and self.samples[1][1] <= step - self.window_steps:
            self.samples.popleft()

    def step_seconds(self) -> float | None:
        """Seconds per step over about the last epoch; None before enough steps have been measured."""
        if len(self.samples) < 2 or self.samples[-1][1] - self.started_at < self.needed:
            return None
        (then, first), (now, last) = self.samples[0], self.samples[-1]
        return (now - then) / (last - first)

    def fraction(self, *, begun: int, step: int) -> float:
        """Work done over all the work, a beginning weighed by what it takes against a step; it never goes back."""
        weight = self._begin_steps()
        done = begun * weight + min(step, self.total_steps)
        self.shown = max(self.shown, min(1.0, done / (self.rounds * weight + self.total_steps)))
        return self.shown

    def seconds_left(self, *, begun: int, step: int) -> float | None:
        """The steps left at the measured pace plus the beginnings left; None until a pace has been measured."""
        per_step = self.step_seconds()
        if per_step is None:
            return None
        per_begin = self._begin_steps() * per_step if not self.begin_seconds else self.begin_seconds[-1]
        return max(0, self.total_steps - step) * per_step + max(0, self.rounds - begun) * per_begin

    def _begin_steps(self) -> float:
        """A beginning's weight in steps: as measured, once a beginning and a pace both have been."""
        per_step = self.step_seconds()
        if self.begin_seconds and per_step:
            return self.begin_seconds[-1] / per_step
        return self.begin_guess

    def _training_clock(self) -> float:
        return self.clock() - self.paused

"""The pretraining's fraction and ETA against a fake clock, on runs simulated the way the trainer drives them: a
start-up, then rounds of {extract and cluster -> epochs of steps}, each epoch paying its loader's start-up."""

from __future__ import annotations

from dataclasses import dataclass

from xdc.progress import Pace


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Run:
    rounds: int = 4
    epochs: int = 3
    steps_per_epoch: int = 90
    log_every: int = 10
    startup: float = 60.0  # loading the data, building the model, starting the run: the pace never sees it
    begin: float = 25.0  # a round's extraction and clustering
    epoch_start: float = 3.0  # the loader's workers starting, the checkpoint
    step: float = 0.3

    @property
    def total_steps(self) -> int:
        return self.rounds * self.epochs * self.steps_per_epoch

    def simulate(self, *, slower_from: int | None = None, guessed_begin_batches: float = 40.0,
                 start_round: int = 0) -> tuple[list[tuple[float, float | None, float, int]], float]:
        """Drive a Pace as the trainer does; the (time, eta, fraction, step) of every progress report, and the
        end's time. From global step `slower_from` on, every step takes twice as long (another job took a core)."""
        clock = FakeClock()
        pace = Pace(rounds=self.rounds, total_steps=self.total_steps, window_steps=self.steps_per_epoch,
                    begin_batches=guessed_begin_batches, clock=clock)
        reports = []

        def report(begun: int, step: int) -> None:
            pace.reached(step)
            reports.append((clock.now, pace.seconds_left(begun=begun, step=step),
                            pace.fraction(begun=begun, step=step), step))

        step = start_round * self.epochs * self.steps_per_epoch
        clock.advance(self.startup)
        pace.start(step)
        for round_index in range(start_round, self.rounds):
            with pace.round_beginning():
                report(round_index, step)
                clock.advance(self.begin)
            for _ in range(self.epochs):
                clock.advance(self.epoch_start)
                for index in range(self.steps_per_epoch):
                    slow = slower_from is not None and step >= slower_from
                    clock.advance(self.step * (2 if slow else 1))
                    step += 1
                    if step % self.log_every == 0 or index == self.steps_per_epoch - 1:
                        report(round_index + 1, step)
        return reports, clock.now


def errors(reports, end: float, *, after_step: int = 0) -> list[float]:
    """Each ETA's error as a share of the time that was really left (in the last minute, of a minute: a second or
    two off there is no lie)."""
    return [abs(eta - (end - now)) / max(end - now, 60.0) for now, eta, _, step in reports
            if eta is not None and step > after_step]


def test_there_is_no_eta_before_half_an_epoch_of_steps_has_been_measured():
    run = Run()
    reports, _ = run.simulate()

    assert reports[0][1] is None  # the first round's clustering: nothing measured yet
    first = next(step for _, eta, _, step in reports if eta is not None)
    assert first == 50  # the first log point past 45 steps
    assert all(eta is not None for _, eta, _, step in reports if step >= first)


def test_a_steady_runs_eta_stays_within_a_tenth_of_the_truth():
    run = Run()
    reports, end = run.simulate()

    assert max(errors(reports, end)) < 0.1
    assert max(errors(reports, end, after_step=run.steps_per_epoch)) < 0.05
    assert reports[-1][1] == 0.0


def test_the_eta_follows_a_slowdown_within_an_epoch():
    run = Run()
    reports, end = run.simulate(slower_from=500)

    later = 500 + run.steps_per_epoch + run.log_every
    assert max(errors(reports, end, after_step=later)) < 0.1


def test_a_resumed_run_counts_the_beginnings_ahead_before_it_has_timed_one():
    run = Run(step=0.3, begin=6.0)  # 40 batches of extraction at half a step's cost each
    clock = FakeClock()
    pace = Pace(rounds=4, total_steps=run.total_steps, window_steps=90, begin_batches=40, clock=clock)
    pace.start(360)  # resumed in round 2's second epoch: its clustering was done by the attempt before
    for step in range(361, 451):
        clock.advance(0.3)
        pace.reached(step)

    left = pace.seconds_left(begun=2, step=450)
    assert left is not None and abs(left - ((1080 - 450) * 0.3 + 2 * 6.0)) < 0.01


def test_the_fraction_weighs_each_rounds_clustering_and_never_goes_back():
    run = Run(begin=81.0)  # a round's clustering as long as a third of its training
    reports, end = run.simulate()

    fractions = [fraction for _, _, fraction, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    start = reports[0][0]
    for now, _, fraction, step in reports:
        if step > run.steps_per_epoch:
            assert abs(fraction - (now - start) / (end - start)) < 0.05  # the share of the time it took

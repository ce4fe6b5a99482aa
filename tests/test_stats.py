"""rliable-style statistics against values computed by hand."""

import numpy as np
import pytest

from rl_lab import stats


def test_iqm_is_the_mean_of_the_middle_half():
    # 8 runs sorted -50, 1, 2, 3, 4, 5, 6, 100: two cut from each end -> mean of 2, 3, 4, 5.
    assert stats.iqm([100, 1, 6, 3, -50, 4, 5, 2]) == pytest.approx(3.5)
    # 10 runs: int(0.25 * 10) = 2 cut from each end -> mean of the middle 6.
    assert stats.iqm(list(range(10))) == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))
    # 4 runs: one cut from each end.
    assert stats.iqm([0, 10, 20, 1000]) == pytest.approx(15.0)


def test_probability_of_improvement_counts_pairs_and_half_ties():
    x, y = [3, 5], [1, 3, 4]
    # pairs (x > y): 3>1, 5>1, 5>3, 5>4 = 4; ties: 3=3 -> 0.5; of 6 pairs.
    assert stats.probability_of_improvement(x, y) == pytest.approx(4.5 / 6)
    assert stats.probability_of_improvement(y, x) == pytest.approx(1.5 / 6)
    assert stats.probability_of_improvement([1, 2], [1, 2]) == pytest.approx(0.5)


def test_probability_of_improvement_averages_over_tasks():
    x = np.array([[1.0, 0.0], [2.0, 0.0]])  # 2 runs x 2 tasks
    y = np.array([[0.0, 5.0], [0.0, 5.0]])
    assert stats.probability_of_improvement(x, y) == pytest.approx((1.0 + 0.0) / 2)


def test_interval_of_constant_scores_is_a_point():
    assert stats.interval([7, 7, 7, 7]) == (7.0, 7.0, 7.0)


def test_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    scores = rng.normal(10, 2, size=20)
    point, low, high = stats.interval(scores, stats.mean, reps=4000, seed=3)
    assert point == pytest.approx(scores.mean())
    assert low < point < high
    # The percentile bootstrap of a mean of 20 normals is close to mean +- 1.96 sd/sqrt(n).
    half = 1.96 * scores.std() / np.sqrt(20)
    assert high - low == pytest.approx(2 * half, rel=0.15)
    assert stats.interval(scores, stats.mean, reps=4000, seed=3) == (point, low, high)


def test_bootstrap_is_stratified_by_task():
    # Task 0 scores 0, task 1 scores 100: a stratified resample keeps every run's task, so
    # the mean of every bootstrap sample is exactly 50.
    scores = np.array([[0.0, 100.0]] * 5)
    assert stats.interval(scores, stats.mean, reps=500) == (50.0, 50.0, 50.0)


def test_probability_of_improvement_interval():
    point, low, high = stats.probability_of_improvement_interval(
        [5, 6, 7, 8], [1, 2, 3, 4], reps=2000
    )
    assert point == 1.0 and low == 1.0 and high == 1.0
    point, low, high = stats.probability_of_improvement_interval(
        [1, 3, 5, 7], [2, 4, 6, 8], reps=2000
    )
    assert point == pytest.approx(6 / 16) and 0.0 <= low < point < high <= 1.0


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        stats.interval([1.0, float("nan")])

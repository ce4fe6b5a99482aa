"""Aggregate statistics over runs, following rliable (Agarwal et al., NeurIPS 2021).

The `rliable` package does not import here (its `arch` dependency breaks with the installed
pandas), so these are its definitions in numpy/scipy:

- IQM: the interquartile mean, scipy.stats.trim_mean(scores, 0.25) over all runs (a quarter
  of the runs cut from each end; with 10 runs, the mean of the middle 6).
- Confidence intervals: percentile bootstrap over runs, stratified by task (each task's runs
  are resampled with replacement among themselves), 95% by default, seeded.
- Probability of improvement P(X > Y): the chance that a run of X scores higher than a run of
  Y (ties count half), i.e. the Mann-Whitney U statistic over N*M, averaged over tasks; its CI
  resamples X's and Y's runs independently.

Scores are arrays of shape (runs,) for one task or (runs, tasks).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats as scipy_stats

REPS = 10_000


def as_matrix(scores) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    matrix = matrix.reshape(len(matrix), -1)  # (runs, tasks)
    if matrix.size == 0 or np.isnan(matrix).any():
        raise ValueError("scores must be a non-empty array without NaN")
    return matrix


def iqm(scores, axis=None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle half of the scores."""
    return scipy_stats.trim_mean(np.asarray(scores, dtype=np.float64), 0.25, axis=axis)


def mean(scores, axis=None) -> float | np.ndarray:
    return np.mean(np.asarray(scores, dtype=np.float64), axis=axis)


def bootstrap_samples(matrix: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, runs, tasks): each task's column resampled over its own runs (stratified)."""
    runs, tasks = matrix.shape
    picks = rng.integers(runs, size=(reps, runs, tasks))
    return np.take_along_axis(matrix[None], picks, axis=1)


def interval(
    scores,
    statistic: Callable = iqm,
    confidence: float = 0.95,
    reps: int = REPS,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, low, high) of `statistic` over all runs and tasks."""
    matrix = as_matrix(scores)
    point = float(statistic(matrix.ravel()))
    samples = bootstrap_samples(matrix, reps, np.random.default_rng(seed))
    values = statistic(samples.reshape(reps, -1), axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return point, float(low), float(high)


def probability_of_improvement(x, y) -> float:
    """P(X > Y): ties count half; averaged over tasks."""
    x, y = as_matrix(x), as_matrix(y)
    return float(_poi(x[None], y[None])[0])


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Batched P(X > Y) for x (B, N, T) and y (B, M, T) -> (B,)."""
    greater = (x[:, :, None, :] > y[:, None, :, :]).mean(axis=(1, 2))
    ties = (x[:, :, None, :] == y[:, None, :, :]).mean(axis=(1, 2))
    return (greater + 0.5 * ties).mean(axis=-1)


def probability_of_improvement_interval(
    x, y, confidence: float = 0.95, reps: int = REPS, seed: int = 0
) -> tuple[float, float, float]:
    """(P(X > Y), low, high) with X's and Y's runs resampled independently."""
    x, y = as_matrix(x), as_matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError("x and y need the same tasks")
    rng = np.random.default_rng(seed)
    values = np.concatenate(  # in chunks: the pairwise comparison is reps x N x M x tasks
        [
            _poi(bootstrap_samples(x, n, rng), bootstrap_samples(y, n, rng))
            for n in np.diff(np.r_[0:reps:1000, reps])
        ]
    )
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return probability_of_improvement(x, y), float(low), float(high)

"""How far a mean over a few seeds can be trusted: Student's t-interval, at 95%.

A cell of a table is the mean of n runs that differ only in their seed, most often 2 to 10. Its
interval is

    mean ± t(0.975, n - 1) · s / √n        (s: the standard deviation over seeds)

and a difference between two cells is the same interval over the seed-by-seed differences (a
paired t-interval; compare.py).

Why t and not a bootstrap: rliable (Agarwal et al., NeurIPS 2021) recommends stratified bootstrap
intervals for aggregates over many tasks, where each task has few runs but there are many tasks
to resample. One cell has nothing but its n seeds, and a percentile bootstrap of 3 to 10 values
covers far less than it claims: it never reaches past the smallest and largest value seen, and
its spread is s·√((n-1)/n)/√n, narrower than the t-interval by a factor of 2.7 at n = 3 and 1.2
at n = 10. The t-interval is exact when seed-to-seed noise is normal, close to it for a final
test error (an average over thousands of test images), and widens honestly as n shrinks. With
one seed there is no spread to measure, hence no interval: "n too small".
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

LEVEL = 0.95


@functools.lru_cache(maxsize=None)  # a table asks for the same few df in every cell
def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t such that P(|T| < t) = level for Student's T with `df` degrees of freedom."""
    low, high = 0.0, 1.0
    while _two_sided(high, df) < level:
        high *= 2
    for _ in range(200):  # bisection: P(|T| < t) increases with t
        mid = (low + high) / 2
        low, high = (mid, high) if _two_sided(mid, df) < level else (low, mid)
    return (low + high) / 2


def _two_sided(t: float, df: int) -> float:
    """P(|T| < t), exactly, by the finite series for whole df (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 0:
        term = total = 1.0
        for k in range(2, df - 1, 2):
            term *= (k - 1) / k * c2
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)
    for k in range(3, df - 1, 2):
        term *= (k - 1) / k * c2
        total += term
    return 2 / math.pi * (theta + s * total)


def interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The t-interval of the mean of `values`; None for fewer than two (n too small)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1, level) * std / math.sqrt(n)
    return mean - half, mean + half

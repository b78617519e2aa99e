"""Statistics for Depth Arena: which arm raters prefer, how sure we are, and how far to trust the raters.

Pure numpy/scipy (+ the ``krippendorff`` package); no Django. Every function works on plain arrays.

Input convention
----------------
Votes are numpy arrays of equal length, one entry per vote:

* ``left``     int, index (0..n_arms-1) of the arm shown on the left (A);
* ``right``    int, index of the arm shown on the right (B), never equal to ``left``;
* ``outcome``  int: ``LEFT`` = 0 (A better), ``RIGHT`` = 1 (B better), ``TIE`` = 2, ``BOTH_BAD`` = 3.
  For preference, "both bad" is a tie; it is still counted separately;
* ``prompt``   int prompt id: the bootstrap unit (a prompt's votes are resampled together);
* ``rater``    int rater id;
* ``category`` int category index 0..n_categories-1 (optional; a prompt belongs to one category).

``summarize`` takes these as a dict of arrays keyed by those names, plus optional boolean masks
``gold_failed``, ``too_fast`` and ``flagged`` used by ``apply_exclusions``.

Scores
------
Strengths are fitted as natural-log strengths θ (Bradley-Terry: P(i beats j | decisive) = σ(θ_i − θ_j))
and reported on the familiar Elo-like scale ``score = 1000 + 400·log10(e)·(θ − mean θ)``: a 400-point
gap means 10:1 odds among decisive votes. The mean is taken over arms that have votes; arms without
votes get NaN.

Prior: the fit maximises the likelihood plus a Gaussian prior ``−ridge/2·(Σθ² + λ²)`` (λ = log ν, the
Davidson tie parameter), i.e. a prior standard deviation of 1/√ridge = 10 log-odds units (≈1700 points)
by default. It is far too weak to matter on real data, but keeps the estimate finite when an arm wins
(or loses, or never ties) every vote, where the plain MLE runs off to infinity.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import krippendorff
import numpy as np

# scipy is imported inside the few functions that use it: it costs a process about 1.2 s and 70 MB, and the
# rating pages, most of a web process's requests, never need it (tests/test_imports.py keeps it so).

LEFT, RIGHT, TIE, BOTH_BAD = 0, 1, 2, 3
# Canonical labels: the verdict by arm identity (lower or higher arm index), not by screen side.
LOWER_BETTER, HIGHER_BETTER, CANON_TIE, CANON_BOTH_BAD = 0, 1, 2, 3

Ties = Literal["davidson", "half"]

DEFAULT_RIDGE = 1e-2
# Newton stops when no log-strength moves by more than this. 1e-6 is 2e-4 score points: ample for
# bootstrap rounds, and it saves the last, purely cosmetic iteration of every round.
FIT_TOL = 1e-8
ROUND_TOL = 1e-6
ELO_SCALE = 400.0 / math.log(10.0)
ELO_MEAN = 1000.0

# Armijo sufficient-decrease constant and the most step halvings before a Newton step is accepted anyway.
_ARMIJO = 1e-4
_MAX_HALVINGS = 30

# Bootstrap weights are drawn for this many distinct count rows at a time, to bound memory.
_CHUNK = 4096


# --------------------------------------------------------------------------- votes to pair counts


def canonical_label(left: np.ndarray, right: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """Map side-based verdicts to arm-based ones: LOWER_BETTER, HIGHER_BETTER, CANON_TIE or CANON_BOTH_BAD.

    Two raters who saw the same pair in opposite screen order agree exactly when their canonical labels match.
    """
    left, right, outcome = np.asarray(left), np.asarray(right), np.asarray(outcome)
    left_is_lower = left < right
    label = outcome.astype(np.int64).copy()
    label[(outcome == LEFT) & ~left_is_lower] = HIGHER_BETTER
    label[(outcome == RIGHT) & ~left_is_lower] = LOWER_BETTER
    return label


def pair_index(a: np.ndarray, b: np.ndarray, n_arms: int) -> np.ndarray:
    """Index of the unordered pair {a, b} in ``np.triu_indices(n_arms, 1)`` order."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    return lo * n_arms - lo * (lo + 1) // 2 + (hi - lo - 1)


def _check_votes(left: np.ndarray, right: np.ndarray, outcome: np.ndarray, n_arms: int) -> None:
    if not (len(left) == len(right) == len(outcome)):
        raise ValueError("left, right and outcome must have the same length")
    if len(left) == 0:
        return
    if min(left.min(), right.min()) < 0 or max(left.max(), right.max()) >= n_arms:
        raise ValueError(f"arm indices must lie in 0..{n_arms - 1}")
    if np.any(left == right):
        raise ValueError("an arm cannot be compared with itself")
    if outcome.min() < LEFT or outcome.max() > BOTH_BAD:
        raise ValueError("outcome must be 0 (left), 1 (right), 2 (tie) or 3 (both bad)")


def _pair_class(
    left: np.ndarray, right: np.ndarray, outcome: np.ndarray, n_arms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per vote: the pair index and the fitting class (0 lower arm won, 1 higher won, 2 tie or both bad)."""
    left, right, outcome = np.asarray(left), np.asarray(right), np.asarray(outcome)
    _check_votes(left, right, outcome, n_arms)
    cls = np.minimum(canonical_label(left, right, outcome), CANON_TIE)
    return pair_index(left, right, n_arms), cls


def _pair_counts(pair: np.ndarray, cls: np.ndarray, n_pairs: int) -> np.ndarray:
    """[n_pairs, 3] counts of (lower arm won, higher arm won, tie)."""
    return np.bincount(pair * 3 + cls, minlength=n_pairs * 3).reshape(n_pairs, 3).astype(np.float64)


# --------------------------------------------------------------------------- Bradley-Terry fit


@dataclass(frozen=True)
class BTResult:
    """A Bradley-Terry fit. Arrays are indexed by arm; arms without votes hold NaN."""

    scores: np.ndarray  # Elo-like, mean 1000 over arms with votes
    log_strength: np.ndarray  # θ (natural log), mean 0 over arms with votes
    nu: float  # Davidson tie parameter ν; NaN under ties="half"
    n_votes: np.ndarray  # votes involving each arm
    ties: str
    iterations: int
    converged: bool


@dataclass(frozen=True)
class _Design:
    """The arms and pairs a fit runs on: arms with votes, pairs with votes (others carry no information)."""

    active: np.ndarray  # arm indices with votes
    pairs: np.ndarray  # pair indices (triu order over all arms) with votes
    lower: np.ndarray  # per pair: position of its lower arm among the active arms
    higher: np.ndarray  # per pair: position of its higher arm
    incidence: np.ndarray  # [pairs, active]: +1 at the lower arm, -1 at the higher


def _design(full_counts: np.ndarray, n_arms: int) -> _Design:
    lo, hi = np.triu_indices(n_arms, 1)
    pairs = np.flatnonzero(full_counts.sum(axis=1) > 0)
    active = np.unique(np.concatenate([lo[pairs], hi[pairs]]))
    position = np.full(n_arms, -1)
    position[active] = np.arange(len(active))
    lower, higher = position[lo[pairs]], position[hi[pairs]]
    incidence = np.zeros((len(pairs), len(active)))
    incidence[np.arange(len(pairs)), lower] = 1.0
    incidence[np.arange(len(pairs)), higher] = -1.0
    return _Design(active, pairs, lower, higher, incidence)


def _objective(
    x: np.ndarray, counts: np.ndarray, design: _Design, davidson: bool, ridge: float
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Penalised negative log-likelihood per round, and the per-pair terms its derivatives reuse.

    x: [R, m] log-strengths (+ λ = log ν in the last column under Davidson); counts: [R, pairs, 3].
    """
    m = design.incidence.shape[1]
    d = x[:, design.lower] - x[:, design.higher]  # θ_lower − θ_higher, [R, pairs]
    wa, wb, t = counts[..., 0], counts[..., 1], counts[..., 2]
    penalty = 0.5 * ridge * np.einsum("rk,rk->r", x, x)
    if davidson:
        # Divide through by √(π_i π_j): P(i) = e^{d/2}/s, P(tie) = ν/s, with s = e^{d/2} + e^{-d/2} + ν.
        lam = x[:, m:]
        log_s = np.logaddexp(np.logaddexp(0.5 * d, -0.5 * d), lam)
        nll = ((wa + wb + t) * log_s - (wa - wb) * (0.5 * d) - t * lam).sum(axis=1)
        return nll + penalty, (d, log_s)
    # Ties count half: a tie is half a win for each side.
    nll = ((wa + 0.5 * t) * np.logaddexp(0.0, -d) + (wb + 0.5 * t) * np.logaddexp(0.0, d)).sum(axis=1)
    return nll + penalty, (d,)


def _newton_system(
    x: np.ndarray,
    parts: tuple[np.ndarray, ...],
    counts: np.ndarray,
    design: _Design,
    davidson: bool,
    ridge: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient [R, p] and Hessian [R, p, p] of the penalised negative log-likelihood."""
    rounds, p = x.shape
    m = design.incidence.shape[1]
    wa, wb, t = counts[..., 0], counts[..., 1], counts[..., 2]
    n = wa + wb + t
    d = parts[0]
    if davidson:
        log_s = parts[1]
        pa, pb, pt = np.exp(0.5 * d - log_s), np.exp(-0.5 * d - log_s), np.exp(x[:, m:] - log_s)
        diff = pa - pb
        g_d = 0.5 * (n * diff - (wa - wb))
        h_dd = 0.25 * n * (pa + pb - diff * diff)
    else:
        p_win = 0.5 * (1.0 + np.tanh(0.5 * d))  # σ(d) without overflow
        g_d = n * p_win - (wa + 0.5 * t)
        h_dd = n * p_win * (1.0 - p_win)
    # einsum rather than @: these products are too small to gain from BLAS threads, and waking those
    # threads on a busy machine costs milliseconds per call.
    grad = np.empty((rounds, p))
    hess = np.zeros((rounds, p, p))
    diag = np.arange(p)
    grad[:, :m] = np.einsum("rk,km->rm", g_d, design.incidence)
    hess[:, design.lower, design.higher] = hess[:, design.higher, design.lower] = -h_dd
    hess[:, diag[:m], diag[:m]] = np.einsum("rk,km->rm", h_dd, np.abs(design.incidence))
    if davidson:
        grad[:, m] = (n * pt - t).sum(axis=1)
        hess[:, :m, m] = hess[:, m, :m] = np.einsum("rk,km->rm", -0.5 * n * diff * pt, design.incidence)
        hess[:, m, m] = (n * pt * (1.0 - pt)).sum(axis=1)
    grad += ridge * x
    hess[:, diag, diag] += ridge
    # The likelihood ignores a common shift of θ, so with a tiny ridge the Hessian is nearly singular
    # along it. Adding 1·1ᵀ/m there only preconditions: θ is kept centred (the ridge optimum has mean 0).
    hess[:, :m, :m] += 1.0 / m
    return grad, hess


def _fit_rounds(
    counts: np.ndarray,
    design: _Design,
    davidson: bool,
    ridge: float,
    x0: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, int, bool]:
    """Damped Newton on all rounds at once; returns x [R, p], iterations used and whether all converged."""
    m = design.incidence.shape[1]
    x = x0.copy()
    x[:, :m] -= x[:, :m].mean(axis=1, keepdims=True)
    f, parts = _objective(x, counts, design, davidson, ridge)
    for iteration in range(1, max_iter + 1):
        grad, hess = _newton_system(x, parts, counts, design, davidson, ridge)
        step = -np.linalg.solve(hess, grad[..., None])[..., 0]
        step[:, :m] -= step[:, :m].mean(axis=1, keepdims=True)
        slope = np.einsum("rp,rp->r", grad, step)
        # Backtrack, vectorised over rounds: only rounds whose full step fails Armijo are re-evaluated.
        t = np.ones(len(x))
        x_new = x + step
        f_new, parts_new = _objective(x_new, counts, design, davidson, ridge)
        slack = 1e-12 * (1.0 + np.abs(f))  # rounding noise near the optimum must not count as failure
        failing = np.flatnonzero(f_new > f + _ARMIJO * t * slope + slack)
        for _ in range(_MAX_HALVINGS):
            if len(failing) == 0:
                break
            t[failing] *= 0.5
            x_try = x[failing] + t[failing, None] * step[failing]
            f_try, parts_try = _objective(x_try, counts[failing], design, davidson, ridge)
            x_new[failing], f_new[failing] = x_try, f_try
            for whole, part in zip(parts_new, parts_try, strict=True):
                whole[failing] = part
            ok = f_try <= f[failing] + _ARMIJO * t[failing] * slope[failing] + slack[failing]
            failing = failing[~ok]
        moved = np.abs(x_new - x).max()
        x, f, parts = x_new, f_new, parts_new
        if moved < tol:
            return x, iteration, True
    return x, max_iter, False


def _scores_from_theta(theta: np.ndarray, active: np.ndarray, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred log-strengths and Elo-like scores for all arms (NaN where inactive); theta is [R, active]."""
    log_strength = np.full((len(theta), n_arms), np.nan)
    if len(active):
        log_strength[:, active] = theta - theta.mean(axis=1, keepdims=True)
    return log_strength, ELO_MEAN + ELO_SCALE * log_strength


def _fit_counts(
    counts: np.ndarray, n_arms: int, ties: Ties, ridge: float, max_iter: int, tol: float
) -> tuple[BTResult, _Design, np.ndarray]:
    """Fit one [pairs, 3] count table; also returns the design and the solution vector for warm starts."""
    if ties not in ("davidson", "half"):
        raise ValueError('ties must be "davidson" or "half"')
    if ridge <= 0:
        # Without the prior, an arm cut off from the others (always in a bootstrap round that drops its
        # votes) leaves the Hessian singular. A tiny ridge such as 1e-9 approximates the plain MLE.
        raise ValueError("ridge must be > 0")
    davidson = ties == "davidson"
    lo, hi = np.triu_indices(n_arms, 1)
    per_pair = counts.sum(axis=1)
    n_votes = np.bincount(lo, per_pair, n_arms) + np.bincount(hi, per_pair, n_arms)
    design = _design(counts, n_arms)
    m = len(design.active)
    if m == 0:
        empty = np.full(n_arms, np.nan)
        return BTResult(empty, empty.copy(), math.nan, n_votes, ties, 0, True), design, np.zeros((1, 0))
    x0 = np.zeros((1, m + davidson))
    x, iterations, converged = _fit_rounds(
        counts[None, design.pairs], design, davidson, ridge, x0, max_iter, tol
    )
    log_strength, scores = _scores_from_theta(x[:, :m], design.active, n_arms)
    nu = float(np.exp(x[0, m])) if davidson else math.nan
    result = BTResult(scores[0], log_strength[0], nu, n_votes, ties, iterations, converged)
    return result, design, x


def bradley_terry(
    left: np.ndarray,
    right: np.ndarray,
    outcome: np.ndarray,
    n_arms: int,
    *,
    ties: Ties = "davidson",
    ridge: float = DEFAULT_RIDGE,
    max_iter: int = 100,
    tol: float = FIT_TOL,
) -> BTResult:
    """Bradley-Terry strengths by penalised maximum likelihood (damped Newton on log-strengths).

    ties="davidson": Davidson (1970): P(i beats j) = π_i/(π_i+π_j+ν√(π_iπ_j)),
    P(tie) = ν√(π_iπ_j)/(π_i+π_j+ν√(π_iπ_j)), with ν fitted jointly. ties="half": a tie is half a win
    for each side. "Both bad" is a tie either way. See the module docstring for the ridge prior and scale.
    """
    pair, cls = _pair_class(left, right, outcome, n_arms)
    counts = _pair_counts(pair, cls, n_arms * (n_arms - 1) // 2)
    return _fit_counts(counts, n_arms, ties, ridge, max_iter, tol)[0]


# --------------------------------------------------------------------------- bootstrap over prompts


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile bootstrap intervals (prompts resampled) around a Bradley-Terry fit."""

    fit: BTResult
    lo: np.ndarray  # score interval per arm (NaN for arms without votes)
    hi: np.ndarray
    rank_lo: np.ndarray  # best rank (1 = top) within the central ci of rounds; NaN for arms without votes
    rank_hi: np.ndarray  # worst rank within the central ci of rounds
    nu_lo: float
    nu_hi: float
    samples: np.ndarray  # [n_rounds, n_arms] bootstrap scores
    n_rounds: int
    ci: float
    converged: bool  # every round's fit converged


@functools.lru_cache(maxsize=128)
def _poisson_table(lam: int) -> np.ndarray:
    """Poisson(lam) as a lookup table on a uniform 16-bit integer: value k fills round(65536·P(X = k)) slots.

    Exact to 1/65536 per value (the tails beyond that are cut), and several times faster than
    Generator.poisson, which pays a log and a sqrt per draw when lam varies. float32, so that a lookup
    is already a matmul operand.
    """
    support = np.arange(int(lam + 12 * math.sqrt(lam) + 12))  # beyond 12 sd the mass is far below 2**-16
    from scipy import stats as sps  # on first use: see the note on imports

    edges = np.round(sps.poisson.cdf(support, lam) * 65536).astype(np.int64)
    edges[-1] = 65536
    table = np.repeat(support.astype(np.float32), np.diff(edges, prepend=0))
    table.flags.writeable = False
    return table


def _poisson_weights(rng: np.random.Generator, lam: np.ndarray, n_rounds: int) -> np.ndarray:
    """[len(lam), n_rounds] float32 Poisson(lam) draws for sorted integer lam (see _poisson_table)."""
    size = len(lam) * n_rounds
    uniform = rng.bit_generator.random_raw((size + 3) // 4).view(np.uint16)[:size].reshape(len(lam), n_rounds)
    values, starts = np.unique(lam, return_index=True)
    blocks = [
        _poisson_table(int(value))[uniform[start:stop]]
        for value, start, stop in zip(values, starts, [*starts[1:], len(lam)], strict=True)
    ]
    return np.concatenate(blocks)


def _bootstrap_counts(
    unit: np.ndarray, pair: np.ndarray, cls: np.ndarray, n_pairs: int, n_rounds: int, rng: np.random.Generator
) -> np.ndarray:
    """[n_rounds, n_pairs, 3] pair counts under a Poisson bootstrap over units (prompts).

    Each unit gets an independent Poisson(1) weight per round (the Poisson bootstrap: the large-sample
    equivalent of resampling units with replacement, whose weights are Multinomial(U, 1/U)). Units with
    identical count rows are exchangeable, so a group of g of them gets one Poisson(g) weight: exact, and
    it turns e.g. 50,000 one-pair prompts into a few hundred rows.
    """
    out = np.zeros((n_rounds, n_pairs, 3))
    if len(unit) == 0:
        return out
    columns, column_idx = np.unique(pair * 3 + cls, return_inverse=True)
    units, unit_idx = np.unique(unit, return_inverse=True)
    table = np.bincount(unit_idx * len(columns) + column_idx, minlength=len(units) * len(columns))
    rows, group_size = _distinct_rows(table.reshape(len(units), len(columns)))
    by_size = np.argsort(group_size, kind="stable")  # rows of one size share a lookup table
    rows, group_size = rows[by_size], group_size[by_size]
    totals = np.zeros((len(columns), n_rounds), np.float64)
    from scipy import sparse  # on first use: see the note on imports

    for start in range(0, len(rows), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        # Rows hold a few votes each: a sparse product costs votes × rounds, and (unlike a BLAS call)
        # starts no threads. float32 is exact here: every sum is an integer far below 2**24.
        rows_t = sparse.csr_matrix(rows[chunk].T.astype(np.float32))
        totals += rows_t @ _poisson_weights(rng, group_size[chunk], n_rounds)
    out.reshape(n_rounds, -1)[:, columns] = totals.T
    return out


def _distinct_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a non-negative int table and how often each occurs.

    Exact and much faster than np.unique(axis=0): the small counts are bit-packed into a few uint64 keys
    per row, which are sorted with lexsort.
    """
    n_rows, n_cols = table.shape
    bits = max(1, int(table.max()).bit_length())
    per_key = 64 // bits
    n_keys = -(-n_cols // per_key)
    padded = np.zeros((n_rows, n_keys * per_key), np.uint64)
    padded[:, :n_cols] = table
    shifts = (np.arange(per_key, dtype=np.uint64) * np.uint64(bits))[None, None, :]
    keys = (padded.reshape(n_rows, n_keys, per_key) << shifts).sum(axis=2, dtype=np.uint64)
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)])
    sizes = np.diff(np.r_[starts, n_rows])
    return table[order[starts]], sizes


def _summarise_rounds(
    fit: BTResult, design: _Design, x: np.ndarray, n_arms: int, ci: float, converged: bool
) -> BootstrapResult:
    m = len(design.active)
    samples = _scores_from_theta(x[:, :m], design.active, n_arms)[1]
    alpha = 1.0 - ci
    lo, hi = np.full(n_arms, np.nan), np.full(n_arms, np.nan)
    rank_lo, rank_hi = np.full(n_arms, np.nan), np.full(n_arms, np.nan)
    nu_lo = nu_hi = math.nan
    if m:
        active_scores = samples[:, design.active]
        lo[design.active], hi[design.active] = np.quantile(active_scores, [alpha / 2, 1 - alpha / 2], axis=0)
        # Rank 1 = best; equal scores share the better rank.
        ranks = 1 + (active_scores[:, None, :] > active_scores[:, :, None]).sum(axis=2)
        rank_lo[design.active] = np.quantile(ranks, alpha / 2, axis=0, method="lower")
        rank_hi[design.active] = np.quantile(ranks, 1 - alpha / 2, axis=0, method="higher")
        if fit.ties == "davidson":
            nu_lo, nu_hi = np.exp(np.quantile(x[:, m], [alpha / 2, 1 - alpha / 2]))
    return BootstrapResult(
        fit, lo, hi, rank_lo, rank_hi, float(nu_lo), float(nu_hi), samples, len(x), ci, converged
    )


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_bt(
    left: np.ndarray,
    right: np.ndarray,
    outcome: np.ndarray,
    n_arms: int,
    prompt: np.ndarray,
    *,
    n_rounds: int = 1000,
    seed: int | np.random.Generator = 0,
    ci: float = 0.95,
    ties: Ties = "davidson",
    ridge: float = DEFAULT_RIDGE,
    max_iter: int = 100,
    tol: float = ROUND_TOL,
) -> BootstrapResult:
    """Bradley-Terry fit with percentile intervals for scores, ranks and ν from a bootstrap over prompts.

    Prompts, not votes, are resampled (Poisson weights, see _bootstrap_counts), because votes on one prompt
    are correlated. Each round is a weighted fit of pair-outcome counts; all rounds are fitted at once by
    batched Newton, warm-started from the full-data fit. An arm that loses all its votes in a round sits
    at the prior (the mean).
    """
    pair, cls = _pair_class(left, right, outcome, n_arms)
    n_pairs = n_arms * (n_arms - 1) // 2
    counts = _pair_counts(pair, cls, n_pairs)
    fit, design, x_full = _fit_counts(counts, n_arms, ties, ridge, max_iter, FIT_TOL)
    rounds = _bootstrap_counts(np.asarray(prompt), pair, cls, n_pairs, n_rounds, _rng(seed))
    return _bootstrap_groups([(fit, design, x_full)], [rounds], n_arms, ridge, ci, max_iter, tol)[0]


def _bootstrap_groups(
    fits: Sequence[tuple[BTResult, _Design, np.ndarray]],
    counts: Sequence[np.ndarray],
    n_arms: int,
    ridge: float,
    ci: float,
    max_iter: int,
    tol: float,
) -> list[BootstrapResult]:
    """Fit the bootstrap rounds of several groups, batching groups with the same design into one Newton run.

    One batched run over 5,000 rounds costs far less than five runs over 1,000: numpy's per-call overhead
    dominates arrays this small.
    """
    batches: dict[tuple[bytes, bytes], list[int]] = {}
    for i, (_, design, _) in enumerate(fits):
        batches.setdefault((design.active.tobytes(), design.pairs.tobytes()), []).append(i)
    solutions: list[tuple[np.ndarray, bool]] = [(np.zeros((0, 0)), True)] * len(fits)
    for members in batches.values():
        fit, design, _ = fits[members[0]]
        rounds = [len(counts[i]) for i in members]
        if len(design.active) == 0:
            for i, n in zip(members, rounds, strict=True):
                solutions[i] = (np.zeros((n, 0)), True)
            continue
        stacked = np.concatenate([counts[i][:, design.pairs] for i in members])
        x0 = np.concatenate([np.repeat(fits[i][2], n, axis=0) for i, n in zip(members, rounds, strict=True)])
        x, _, converged = _fit_rounds(stacked, design, fit.ties == "davidson", ridge, x0, max_iter, tol)
        for i, part in zip(members, np.split(x, np.cumsum(rounds)[:-1]), strict=True):
            solutions[i] = (part, converged)
    return [
        _summarise_rounds(fit, design, x, n_arms, ci, converged)
        for (fit, design, _), (x, converged) in zip(fits, solutions, strict=True)
    ]


# --------------------------------------------------------------------------- win rates


class WinRates(NamedTuple):
    """[n_arms, n_arms] tables for ordered pairs (row arm vs column arm); the diagonal is NaN/0."""

    wins: np.ndarray  # votes where the row arm won
    ties: np.ndarray  # ties and "both bad" between the two (symmetric)
    n: np.ndarray  # all votes between the two (symmetric)
    rate: np.ndarray  # (wins + ties/2) / n
    lo: np.ndarray  # Wilson interval of rate
    hi: np.ndarray


def wilson_interval(
    successes: np.ndarray | float, n: np.ndarray | float, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion; NaN where n = 0. Fractional successes (half ties) are fine."""
    successes, n = np.asarray(successes, float), np.asarray(n, float)
    from scipy import stats as sps  # on first use: see the note on imports

    z = sps.norm.ppf(0.5 + ci / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def win_rate_matrix(
    left: np.ndarray, right: np.ndarray, outcome: np.ndarray, n_arms: int, *, ci: float = 0.95
) -> WinRates:
    """Head-to-head table: for each ordered pair, the share of its votes the row arm won (tie = half)."""
    left, right, outcome = np.asarray(left), np.asarray(right), np.asarray(outcome)
    _check_votes(left, right, outcome, n_arms)
    shape, cells = (n_arms, n_arms), n_arms * n_arms
    winner = np.where(outcome == LEFT, left, right)
    loser = np.where(outcome == LEFT, right, left)
    decisive = outcome <= RIGHT
    wins = np.bincount(winner[decisive] * n_arms + loser[decisive], minlength=cells).reshape(shape)
    tie_cell = np.bincount(left[~decisive] * n_arms + right[~decisive], minlength=cells).reshape(shape)
    ties = tie_cell + tie_cell.T
    n = wins + wins.T + ties
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (wins + 0.5 * ties) / n
    lo, hi = wilson_interval(wins + 0.5 * ties, n, ci)
    return WinRates(wins, ties, n, rate, lo, hi)


# --------------------------------------------------------------------------- verdict


def verdict(
    scores: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: Sequence[str], votes_so_far: int
) -> dict[str, Any]:
    """The preferred arm, and whether its interval separates it from the runner-up.

    Separated means the leader's lower bound lies above the runner-up's upper bound. Otherwise the votes
    still needed are extrapolated on the assumption that the gap between the two stays as it is and both
    intervals shrink as 1/√n: separation needs (leader's lower margin + runner-up's upper margin) < gap,
    so n_needed = n · ((lower margin + upper margin) / gap)², and votes_needed = n_needed − n.
    """
    scores, lo, hi = np.asarray(scores, float), np.asarray(lo, float), np.asarray(hi, float)
    ranked = [int(i) for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf)) if not np.isnan(scores[i])]
    result: dict[str, Any] = {
        "leader": None,
        "runner_up": None,
        "winner": None,
        "separated": False,
        "gap": math.nan,
        "votes_so_far": int(votes_so_far),
        "votes_needed": None,
        "method": "widths shrink as 1/sqrt(n): n_needed = n * ((leader margin + runner-up margin) / gap)**2",
    }
    if len(ranked) < 2:
        result["message"] = "not enough arms with votes yet"
        return result
    best, second = ranked[0], ranked[1]
    gap = scores[best] - scores[second]
    result.update(leader=names[best], runner_up=names[second], gap=float(gap))
    if lo[best] > hi[second]:
        result.update(winner=names[best], separated=True, votes_needed=0)
        result["message"] = f"{names[best]} is preferred: its interval clears {names[second]}'s"
        return result
    margins = (scores[best] - lo[best]) + (hi[second] - scores[second])
    if gap > 0 and votes_so_far > 0 and np.isfinite(margins):
        needed = votes_so_far * (margins / gap) ** 2
        result["votes_needed"] = max(1, math.ceil(needed - votes_so_far))
        result["message"] = (
            f"no clear winner yet: {names[best]} leads {names[second]} by {gap:.0f} points; "
            f"about {result['votes_needed']} more votes needed if that gap holds"
        )
    else:
        result["message"] = f"no clear winner yet: {names[best]} and {names[second]} are level"
    return result


# --------------------------------------------------------------------------- position bias


def position_bias(outcome: np.ndarray, *, ci: float = 0.95, alpha: float = 0.01) -> dict[str, Any]:
    """Share of decisive votes that went to the left side, with a two-sided binomial test against 1/2."""
    outcome = np.asarray(outcome)
    left_wins = int(np.count_nonzero(outcome == LEFT))
    n_decisive = left_wins + int(np.count_nonzero(outcome == RIGHT))
    if n_decisive == 0:
        return {
            "n_decisive": 0,
            "left_wins": 0,
            "left_share": math.nan,
            "p_value": 1.0,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "biased": False,
        }
    from scipy import stats as sps  # on first use: see the note on imports

    test = sps.binomtest(left_wins, n_decisive, 0.5)
    interval = test.proportion_ci(confidence_level=ci, method="wilson")
    return {
        "n_decisive": n_decisive,
        "left_wins": left_wins,
        "left_share": left_wins / n_decisive,
        "p_value": float(test.pvalue),
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "biased": bool(test.pvalue < alpha),
    }


# --------------------------------------------------------------------------- rater agreement


@dataclass(frozen=True)
class _Ratings:
    """Ratings with compact ids (0..k-1), one per (unit, rater): the last one given."""

    unit: np.ndarray
    rater: np.ndarray
    value: np.ndarray
    rater_ids: np.ndarray  # original rater id of each compact rater index
    n_units: int
    n_values: int

    def subset(self, keep: np.ndarray) -> _Ratings:
        return _Ratings(
            self.unit[keep], self.rater[keep], self.value[keep], self.rater_ids, self.n_units, self.n_values
        )


def _ratings(unit: np.ndarray, rater: np.ndarray, value: np.ndarray) -> tuple[_Ratings, np.ndarray]:
    """Compact, de-duplicated ratings and the positions of the kept ones in the input."""
    units, unit_idx = np.unique(np.asarray(unit), return_inverse=True)
    raters, rater_idx = np.unique(np.asarray(rater), return_inverse=True)
    values, value_idx = np.unique(np.asarray(value), return_inverse=True)
    key = unit_idx.astype(np.int64) * len(raters) + rater_idx
    _, last_from_end = np.unique(key[::-1], return_index=True)
    kept = len(key) - 1 - last_from_end
    ratings = _Ratings(unit_idx[kept], rater_idx[kept], value_idx[kept], raters, len(units), len(values))
    return ratings, kept


def _value_counts(ratings: _Ratings) -> np.ndarray:
    """[units, values] number of ratings of each value per unit."""
    cells = ratings.n_units * ratings.n_values
    flat = np.bincount(ratings.unit * ratings.n_values + ratings.value, minlength=cells)
    return flat.reshape(ratings.n_units, ratings.n_values)


def _alpha(ratings: _Ratings) -> float:
    counts = _value_counts(ratings)
    # Undefined without two values in play or without a unit rated twice (the package would raise).
    if np.count_nonzero(counts.sum(axis=0)) < 2 or not (counts.sum(axis=1) >= 2).any():
        return math.nan
    return float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))


def _majority_agreement(ratings: _Ratings) -> dict[int, float]:
    counts = _value_counts(ratings)
    rows = np.arange(len(ratings.unit))
    others = counts[ratings.unit]
    others[rows, ratings.value] -= 1
    eligible = others.sum(axis=1) >= 1
    top = others.max(axis=1)
    n_modes = (others == top[:, None]).sum(axis=1)
    score = (others[rows, ratings.value] == top) / n_modes
    n_raters = len(ratings.rater_ids)
    rated = np.bincount(ratings.rater[eligible], minlength=n_raters)
    agreed = np.bincount(ratings.rater[eligible], weights=score[eligible], minlength=n_raters)
    return {int(ratings.rater_ids[r]): float(agreed[r] / rated[r]) for r in np.flatnonzero(rated)}


def krippendorff_alpha(
    data: np.ndarray | None = None,
    *,
    unit: np.ndarray | None = None,
    rater: np.ndarray | None = None,
    value: np.ndarray | None = None,
) -> float:
    """Krippendorff's alpha (nominal) by the ``krippendorff`` package; NaN when it is undefined.

    Give either ``data``, a units × raters matrix with NaN for missing, or (unit, rater, value) arrays.
    For the arrays, a rater's repeated rating of a unit counts once (the last), and the package is fed
    per-unit value counts (its ``value_counts`` input): the same statistic as raters × units reliability
    data, without building a raters × units matrix.
    """
    if data is not None:
        reliability = np.asarray(data, float).T
        present = ~np.isnan(reliability)
        if len(np.unique(reliability[present])) < 2 or not (present.sum(axis=0) >= 2).any():
            return math.nan
        return float(krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal"))
    if unit is None or rater is None or value is None:
        raise ValueError("give either data or unit, rater and value")
    return _alpha(_ratings(unit, rater, value)[0])


def rater_majority_agreement(unit: np.ndarray, rater: np.ndarray, value: np.ndarray) -> dict[int, float]:
    """Per rater: the share of their ratings that match the majority of the OTHER raters on the same unit.

    Only units that at least one other rater rated count. When the other raters' most common values tie
    (k of them), a rating matching one of them scores 1/k: agreement with a majority picked at random.
    A rater's repeated rating of a unit counts once (the last); raters with no such unit are left out.
    Use canonical labels (``canonical_label``) as values so that agreement is about which arm won, not
    which side.
    """
    return _majority_agreement(_ratings(unit, rater, value)[0])


# --------------------------------------------------------------------------- exclusions


def apply_exclusions(
    mask_gold_failed: np.ndarray,
    mask_too_fast: np.ndarray,
    mask_flagged: np.ndarray,
    *,
    exclude_gold_failed: bool = True,
    exclude_too_fast: bool = True,
    exclude_flagged: bool = True,
) -> tuple[np.ndarray, dict[str, int]]:
    """Votes to keep, and counts: each reason's count whether or not it is excluded, and the net result.

    A vote caught by several enabled reasons is excluded once, so ``excluded`` can be less than the sum.
    """
    gold, fast, flagged = (np.asarray(m, bool) for m in (mask_gold_failed, mask_too_fast, mask_flagged))
    if not (len(gold) == len(fast) == len(flagged)):
        raise ValueError("exclusion masks must have the same length")
    drop = (gold & exclude_gold_failed) | (fast & exclude_too_fast) | (flagged & exclude_flagged)
    counts = {
        "total": len(gold),
        "gold_failed": int(gold.sum()),
        "too_fast": int(fast.sum()),
        "flagged": int(flagged.sum()),
        "excluded": int(drop.sum()),
        "kept": int(len(gold) - drop.sum()),
    }
    return ~drop, counts


# --------------------------------------------------------------------------- everything at once


def _jsonable(values: np.ndarray, as_int: bool = False) -> list[Any]:
    """Nested lists with None for NaN, so the summary serialises as JSON."""
    array = np.asarray(values, float)
    if array.ndim > 1:
        return [_jsonable(row, as_int) for row in array]
    return [None if math.isnan(v) else (int(v) if as_int else float(v)) for v in array.tolist()]


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def summarize(
    votes: Mapping[str, np.ndarray],
    *,
    n_arms: int,
    n_categories: int,
    n_rounds: int = 1000,
    seed: int = 0,
    ties: Ties = "davidson",
    ci: float = 0.95,
    arm_names: Sequence[str] | None = None,
    ridge: float = DEFAULT_RIDGE,
    exclude_gold_failed: bool = True,
    exclude_too_fast: bool = True,
    exclude_flagged: bool = True,
) -> dict[str, Any]:
    """All statistics, overall and per category, as a JSON-ready dict (NaN → None).

    ``votes`` follows the module's input convention. Exclusions are applied first (masks that are absent
    count as all False). Bootstrap: every (prompt, category) unit gets an independent Poisson weight per
    round, so a category's rounds and the overall rounds (the sum of the categories' weighted counts) come
    from the same resamples. Agreement units are (prompt, arm pair); values are canonical labels.
    """
    clock = time.perf_counter
    timings: dict[str, float] = {}
    started = clock()
    names = list(arm_names) if arm_names is not None else [f"arm {i}" for i in range(n_arms)]
    n_total = len(votes["left"])
    absent = np.zeros(n_total, bool)
    keep, exclusions = apply_exclusions(
        votes.get("gold_failed", absent),
        votes.get("too_fast", absent),
        votes.get("flagged", absent),
        exclude_gold_failed=exclude_gold_failed,
        exclude_too_fast=exclude_too_fast,
        exclude_flagged=exclude_flagged,
    )
    left, right, outcome = (np.asarray(votes[k])[keep] for k in ("left", "right", "outcome"))
    prompt, rater = np.asarray(votes["prompt"])[keep], np.asarray(votes["rater"])[keep]
    category = np.asarray(votes["category"])[keep] if "category" in votes else np.zeros(len(left), np.int64)
    if len(category) and (category.min() < 0 or category.max() >= n_categories):
        raise ValueError(f"category must lie in 0..{n_categories - 1}")
    pair, cls = _pair_class(left, right, outcome, n_arms)
    n_pairs = n_arms * (n_arms - 1) // 2
    label = canonical_label(left, right, outcome)
    agreement_unit = prompt.astype(np.int64) * n_pairs + pair
    groups = [("overall", np.ones(len(left), bool))] + [
        (f"category {c}", category == c) for c in range(n_categories)
    ]
    timings["prepare"] = clock() - started

    part = clock()
    fits = [
        _fit_counts(_pair_counts(pair[mask], cls[mask], n_pairs), n_arms, ties, ridge, 100, FIT_TOL)
        for _, mask in groups
    ]
    timings["fit"] = clock() - part

    part = clock()
    rng = np.random.default_rng(seed)
    category_counts = [
        _bootstrap_counts(prompt[mask], pair[mask], cls[mask], n_pairs, n_rounds, rng)
        for _, mask in groups[1:]
    ]
    overall_counts = np.sum(category_counts, axis=0)
    timings["resample"] = clock() - part

    part = clock()
    boots = _bootstrap_groups(fits, [overall_counts, *category_counts], n_arms, ridge, ci, 100, ROUND_TOL)
    timings["bootstrap_fits"] = clock() - part

    part = clock()
    ratings, kept = _ratings(agreement_unit, rater, label)
    timings["agreement"] = clock() - part

    results: dict[str, Any] = {}
    part_times = {"win_rates": 0.0, "verdict": 0.0, "position_bias": 0.0}
    part_times["agreement"] = timings.pop("agreement")
    for (name, mask), boot in zip(groups, boots, strict=True):
        part = clock()
        table = win_rate_matrix(left[mask], right[mask], outcome[mask], n_arms, ci=ci)
        part_times["win_rates"] += clock() - part
        part = clock()
        decision = verdict(boot.fit.scores, boot.lo, boot.hi, names, int(mask.sum()))
        part_times["verdict"] += clock() - part
        part = clock()
        bias = position_bias(outcome[mask])
        part_times["position_bias"] += clock() - part
        part = clock()
        group_ratings = ratings.subset(mask[kept])
        alpha = _alpha(group_ratings)
        per_rater = _majority_agreement(group_ratings)
        part_times["agreement"] += clock() - part
        results[name] = {
            "n_votes": int(mask.sum()),
            "n_ties": int(np.count_nonzero(outcome[mask] == TIE)),
            "n_both_bad": int(np.count_nonzero(outcome[mask] == BOTH_BAD)),
            "arm_votes": _jsonable(boot.fit.n_votes, as_int=True),
            "scores": _jsonable(boot.fit.scores),
            "ci_low": _jsonable(boot.lo),
            "ci_high": _jsonable(boot.hi),
            "rank_low": _jsonable(boot.rank_lo, as_int=True),
            "rank_high": _jsonable(boot.rank_hi, as_int=True),
            "nu": _nan_to_none(boot.fit.nu),
            "nu_ci": [_nan_to_none(boot.nu_lo), _nan_to_none(boot.nu_hi)],
            "converged": bool(boot.fit.converged and boot.converged),
            "win_rates": {key: _jsonable(getattr(table, key)) for key in table._fields},
            "verdict": {k: _nan_to_none(v) if isinstance(v, float) else v for k, v in decision.items()},
            "position_bias": {k: _nan_to_none(v) if isinstance(v, float) else v for k, v in bias.items()},
            "krippendorff_alpha": _nan_to_none(alpha),
            "rater_agreement": per_rater,
        }
    timings.update(part_times)
    timings["total"] = clock() - started
    return {
        "arms": names,
        "n_arms": n_arms,
        "settings": {"ties": ties, "n_rounds": n_rounds, "seed": seed, "ci": ci, "ridge": ridge},
        "exclusions": exclusions,
        "overall": results["overall"],
        "categories": [results[f"category {c}"] for c in range(n_categories)],
        "timings_s": timings,
    }


# --------------------------------------------------------------------------- simulation and benchmark


def simulate_votes(
    true_scores: Sequence[float] | np.ndarray,
    *,
    n_prompts: int,
    raters_per_prompt: int = 1,
    pairs: int = 1,
    tie_prob: float = 0.2,
    left_bias: float = 0.0,
    seed: int = 0,
    n_raters: int = 50,
    both_bad_share: float = 0.25,
    exclusion_rate: float = 0.0,
) -> dict[str, np.ndarray]:
    """Votes from a Davidson model with known scores, in the module's input convention.

    true_scores: [n_arms] on the score scale, or [n_categories, n_arms] (prompt p is in category
    p % n_categories). Each prompt gets ``pairs`` distinct random arm pairs, each rated by
    ``raters_per_prompt`` distinct raters out of ``n_raters``; sides are random. ν = 2·tie_prob/(1−tie_prob),
    so two equal arms tie with probability tie_prob; a share ``both_bad_share`` of ties is "both bad".
    left_bias is a log-odds bonus for the left side. The masks gold_failed, too_fast and flagged are each
    set at random with probability ``exclusion_rate``.
    """
    rng = np.random.default_rng(seed)
    scores = np.atleast_2d(np.asarray(true_scores, float))
    n_categories, n_arms = scores.shape
    n_pairs = n_arms * (n_arms - 1) // 2
    if not 1 <= pairs <= n_pairs:
        raise ValueError(f"pairs must lie in 1..{n_pairs}")
    if not 1 <= raters_per_prompt <= n_raters:
        raise ValueError("raters_per_prompt must lie in 1..n_raters")
    if not 0 <= tie_prob < 1:
        raise ValueError("tie_prob must lie in [0, 1)")
    theta = (scores - scores.mean(axis=1, keepdims=True)) / ELO_SCALE
    pair_lo, pair_hi = np.triu_indices(n_arms, 1)

    chosen = np.argsort(rng.random((n_prompts, n_pairs)), axis=1)[:, :pairs].ravel()
    unit_prompt = np.repeat(np.arange(n_prompts), pairs)
    raters = np.argpartition(rng.random((len(chosen), n_raters)), raters_per_prompt - 1, axis=1)
    rater = raters[:, :raters_per_prompt].ravel()
    vote_pair = np.repeat(chosen, raters_per_prompt)
    prompt = np.repeat(unit_prompt, raters_per_prompt)
    category = prompt % n_categories
    swap = rng.random(len(prompt)) < 0.5
    left = np.where(swap, pair_hi[vote_pair], pair_lo[vote_pair])
    right = np.where(swap, pair_lo[vote_pair], pair_hi[vote_pair])

    half = 0.5 * (theta[category, left] - theta[category, right] + left_bias)
    nu = 2 * tie_prob / (1 - tie_prob)
    denominator = np.exp(half) + np.exp(-half) + nu
    p_left, p_right = np.exp(half) / denominator, np.exp(-half) / denominator
    u = rng.random(len(prompt))
    outcome = np.where(u < p_left, LEFT, np.where(u < p_left + p_right, RIGHT, TIE))
    outcome[(outcome == TIE) & (rng.random(len(prompt)) < both_bad_share)] = BOTH_BAD
    reasons = ("gold_failed", "too_fast", "flagged")
    masks = {name: rng.random(len(prompt)) < exclusion_rate for name in reasons}
    return {
        "left": left,
        "right": right,
        "outcome": outcome,
        "prompt": prompt,
        "rater": rater,
        "category": category,
        **masks,
    }


def bench(
    n_votes: int = 100_000,
    n_arms: int = 6,
    n_categories: int = 4,
    n_rounds: int = 1000,
    seed: int = 0,
    *,
    pairs: int = 5,
    raters_per_prompt: int = 1,
) -> dict[str, Any]:
    """Time ``summarize`` on simulated votes; returns seconds in total and per part.

    The default design (5 random pairs per prompt, 1 rater each: 20,000 prompts, nearly every one with
    its own count row) was the slowest of those tried (1 to 15 pairs per prompt, 1 to 3 raters).
    Simulating the votes is not timed.
    """
    rng = np.random.default_rng(seed)
    true_scores = ELO_MEAN + rng.normal(0.0, 60.0, size=(n_categories, n_arms))
    per_prompt = pairs * raters_per_prompt
    simulated = simulate_votes(
        true_scores,
        n_prompts=-(-n_votes // per_prompt),
        raters_per_prompt=raters_per_prompt,
        pairs=pairs,
        seed=seed,
        exclusion_rate=0.01,
    )
    simulated = {key: array[:n_votes] for key, array in simulated.items()}
    started = time.perf_counter()
    summary = summarize(simulated, n_arms=n_arms, n_categories=n_categories, n_rounds=n_rounds, seed=seed)
    total = time.perf_counter() - started
    return {
        "n_votes": n_votes,
        "n_arms": n_arms,
        "n_categories": n_categories,
        "n_rounds": n_rounds,
        "n_prompts": len(np.unique(simulated["prompt"])),
        "total_s": total,
        "parts_s": summary["timings_s"],
    }

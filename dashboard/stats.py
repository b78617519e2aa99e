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

DEFAULT_RIDGE = 0.5
# Newton stops when no log-strength moves by more than this. 1e-6 is 2e-4 score points: ample for
# bootstrap rounds, and it saves the last, purely cosmetic iteration of every round.
FIT_TOL = 1e-8
ROUND_TOL = 1e-6
ELO_SCALE = 400.0 / math.log(10.0)
ELO_MEAN = 1000.0

# Armijo sufficient-decrease constant and the most step halvings before a Newton step is accepted anyway.
_ARMIJO = 1e-4
_MAX_HALVINGS = 30

# Bootstrap weights are drawn for about this many (prompt, rater, column) cells at a time, to bound memory.
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

    @property
    def m(self) -> int:
        """Arms in the fit; their log-strengths are the first m parameters."""
        return len(self.active)

    @property
    def q(self) -> int:
        """Parameters that enter the log-odds (λ = log ν, under Davidson, follows them)."""
        return len(self.active)

    @property
    def used(self) -> np.ndarray:
        """The rows of a full count table this fit reads."""
        return self.pairs

    def key(self) -> tuple[bytes, ...]:
        return (self.active.tobytes(), self.pairs.tobytes())

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return x[:, self.lower] - x[:, self.higher]  # θ_lower − θ_higher, [R, pairs]

    def gradient(self, g_d: np.ndarray) -> np.ndarray:
        # einsum rather than @: these products are too small to gain from BLAS threads, and waking those
        # threads on a busy machine costs milliseconds per call.
        return np.einsum("rk,km->rm", g_d, self.incidence)

    def curvature(self, h_dd: np.ndarray) -> np.ndarray:
        hess = np.zeros((len(h_dd), self.m, self.m))
        hess[:, self.lower, self.higher] = hess[:, self.higher, self.lower] = -h_dd
        diag = np.arange(self.m)
        hess[:, diag, diag] = np.einsum("rk,km->rm", h_dd, np.abs(self.incidence))
        return hess


@dataclass(frozen=True)
class _StyleDesign:
    """A fit with covariates (style control): the log-odds of a row are θ_lower − θ_higher + β·z.

    Rows are (pair, quantised style difference) cells (see ``_style_rows``); ``x`` holds each row's arm
    incidence (+1 lower, −1 higher) followed by its covariates z.
    """

    active: np.ndarray
    rows: np.ndarray  # the style rows this fit uses
    x: np.ndarray  # [rows, m + k]
    xx: np.ndarray  # [rows, (m + k)²]: outer product of each row of x, for the Hessian

    @property
    def m(self) -> int:
        return len(self.active)

    @property
    def q(self) -> int:
        return self.x.shape[1]

    @property
    def used(self) -> np.ndarray:
        return self.rows

    def key(self) -> tuple[bytes, ...]:
        return (self.active.tobytes(), self.rows.tobytes(), self.x.tobytes())

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return x[:, : self.q] @ self.x.T

    def gradient(self, g_d: np.ndarray) -> np.ndarray:
        return g_d @ self.x

    def curvature(self, h_dd: np.ndarray) -> np.ndarray:
        return (h_dd @ self.xx).reshape(len(h_dd), self.q, self.q)


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
    x: np.ndarray, counts: np.ndarray, design: _Design | _StyleDesign, davidson: bool, ridge: float
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Penalised negative log-likelihood per round, and the per-row terms its derivatives reuse.

    x: [R, q] log-strengths and covariate effects (+ λ = log ν in the last column under Davidson);
    counts: [R, rows, 3].
    """
    d = design.log_odds(x)
    wa, wb, t = counts[..., 0], counts[..., 1], counts[..., 2]
    penalty = 0.5 * ridge * np.einsum("rk,rk->r", x, x)
    if davidson:
        # Divide through by √(π_i π_j): P(i) = e^{d/2}/s, P(tie) = ν/s, with s = e^{d/2} + e^{-d/2} + ν.
        lam = x[:, design.q :]
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
    design: _Design | _StyleDesign,
    davidson: bool,
    ridge: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient [R, p] and Hessian [R, p, p] of the penalised negative log-likelihood."""
    # x may be one row shared by all rounds (the one-step bootstrap, _one_step_rounds).
    rounds, p = len(counts), x.shape[1]
    m, q = design.m, design.q
    wa, wb, t = counts[..., 0], counts[..., 1], counts[..., 2]
    n = wa + wb + t
    d = parts[0]
    if davidson:
        log_s = parts[1]
        pa, pb, pt = np.exp(0.5 * d - log_s), np.exp(-0.5 * d - log_s), np.exp(x[:, q:] - log_s)
        diff = pa - pb
        g_d = 0.5 * (n * diff - (wa - wb))
        h_dd = 0.25 * n * (pa + pb - diff * diff)
    else:
        p_win = 0.5 * (1.0 + np.tanh(0.5 * d))  # σ(d) without overflow
        g_d = n * p_win - (wa + 0.5 * t)
        h_dd = n * p_win * (1.0 - p_win)
    grad = np.empty((rounds, p))
    hess = np.zeros((rounds, p, p))
    diag = np.arange(p)
    grad[:, :q] = design.gradient(g_d)
    hess[:, :q, :q] = design.curvature(h_dd)
    if davidson:
        grad[:, q] = (n * pt - t).sum(axis=1)
        hess[:, :q, q] = hess[:, q, :q] = design.gradient(-0.5 * n * diff * pt)
        hess[:, q, q] = (n * pt * (1.0 - pt)).sum(axis=1)
    grad += ridge * x
    hess[:, diag, diag] += ridge
    # The likelihood ignores a common shift of θ, so with a tiny ridge the Hessian is nearly singular
    # along it. Adding 1·1ᵀ/m there only preconditions: θ is kept centred (the ridge optimum has mean 0).
    hess[:, :m, :m] += 1.0 / m
    return grad, hess


def _fit_rounds(
    counts: np.ndarray,
    design: _Design | _StyleDesign,
    davidson: bool,
    ridge: float,
    x0: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, int, bool]:
    """Damped Newton on all rounds at once; returns x [R, p], iterations used and whether all converged."""
    m = design.m
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


def _poisson_weights(rng: np.random.Generator, n: int, n_rounds: int) -> np.ndarray:
    """[n, n_rounds] uint8 Poisson(1) draws (see _poisson_table); uint8 keeps a table of 20,000 prompts'
    weights for 1000 rounds at 20 MB."""
    size = n * n_rounds
    uniform = rng.bit_generator.random_raw((size + 3) // 4).view(np.uint16)[:size].reshape(n, n_rounds)
    return _poisson_table(1).astype(np.uint8)[uniform]


def _bootstrap_counts(
    unit: np.ndarray, pair: np.ndarray, cls: np.ndarray, n_pairs: int, n_rounds: int, rng: np.random.Generator
) -> np.ndarray:
    """[n_rounds, n_pairs, 3] pair counts under a Poisson bootstrap over units (prompts)."""
    return _resampled_totals(unit, pair * 3 + cls, n_pairs * 3, n_rounds, rng).reshape(n_rounds, n_pairs, 3)


def _resampled_totals(
    prompt: np.ndarray, column: np.ndarray, n_columns: int, n_rounds: int, rng: np.random.Generator
) -> np.ndarray:
    """[n_rounds, n_columns]: each round's weighted count of the votes in each column.

    Every prompt gets an independent Poisson(1) weight per round (the Poisson bootstrap: the large-sample
    equivalent of resampling prompts with replacement), and all its votes count with that weight, because
    votes on one prompt are correlated. Raters enter through ``rater_inflation``.
    """
    out = np.zeros((n_columns, n_rounds))
    if len(prompt) == 0:
        return out.T
    prompts, prompt_idx = np.unique(np.asarray(prompt), return_inverse=True)
    # Cells are (column, prompt) with their vote counts, sorted by column: a chunk of cells then adds up
    # into the few columns it spans.
    n_prompts = len(prompts)
    cells, count = np.unique(
        np.asarray(column, np.int64) * n_prompts + prompt_idx.ravel(), return_counts=True
    )
    cell_column, cell_prompt = cells // n_prompts, cells % n_prompts
    weights_of_prompt = _poisson_weights(rng, n_prompts, n_rounds)
    single = bool((count == 1).all())
    for start in range(0, len(cells), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        # Integer arithmetic: a Poisson(1) draw stays below 24, so a chunk's sums fit 32 bits exactly.
        weights = weights_of_prompt[cell_prompt[chunk]]
        if not single:
            weights = weights * count[chunk, None].astype(np.uint16)
        columns, first = np.unique(cell_column[chunk], return_index=True)
        out[columns] += np.add.reduceat(weights, first, axis=0, dtype=np.uint32)
    return out.T


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
    rater: np.ndarray | None = None,
    n_rounds: int = 1000,
    seed: int | np.random.Generator = 0,
    ci: float = 0.95,
    ties: Ties = "davidson",
    ridge: float = DEFAULT_RIDGE,
    max_iter: int = 100,
    tol: float = ROUND_TOL,
) -> BootstrapResult:
    """Bradley-Terry fit with percentile intervals for scores, ranks and ν from a cluster bootstrap.

    Prompts, not votes, are resampled (Poisson weights, see _resampled_totals), because votes on one prompt
    are correlated; with ``rater`` the rounds are widened for raters' tastes (``rater_inflation``).
    Each round is a weighted fit of pair-outcome counts; all rounds are fitted at once by batched Newton,
    warm-started from the full-data fit. An arm that loses all its votes in a round sits at the prior (the
    mean).
    """
    pair, cls = _pair_class(left, right, outcome, n_arms)
    n_pairs = n_arms * (n_arms - 1) // 2
    counts = _pair_counts(pair, cls, n_pairs)
    fit, design, x_full = _fit_counts(counts, n_arms, ties, ridge, max_iter, FIT_TOL)
    rounds = _bootstrap_counts(np.asarray(prompt), pair, cls, n_pairs, n_rounds, _rng(seed))
    inflation = None
    if rater is not None:
        inflation = [rater_inflation(left, right, outcome, np.asarray(prompt), np.asarray(rater), n_arms)]
    return _bootstrap_groups([(fit, design, x_full)], [rounds], n_arms, ridge, ci, max_iter, tol, inflation)[
        0
    ]


def _solve_rounds(
    starts: Sequence[tuple[_Design | _StyleDesign, np.ndarray]],
    counts: Sequence[np.ndarray],
    davidson: bool,
    ridge: float,
    max_iter: int,
    tol: float,
) -> list[tuple[np.ndarray, bool]]:
    """Fit the rounds of several groups, batching groups with the same design into one Newton run.

    ``starts`` holds each group's design and full-data solution (the warm start); ``counts`` its rounds
    over all rows. One batched run over 5,000 rounds costs far less than five runs over 1,000: numpy's
    per-call overhead dominates arrays this small.
    """
    batches: dict[tuple[bytes, ...], list[int]] = {}
    for i, (design, _) in enumerate(starts):
        batches.setdefault(design.key(), []).append(i)
    solutions: list[tuple[np.ndarray, bool]] = [(np.zeros((0, 0)), True)] * len(starts)
    for members in batches.values():
        design = starts[members[0]][0]
        rounds = [len(counts[i]) for i in members]
        if design.m == 0:
            for i, n in zip(members, rounds, strict=True):
                solutions[i] = (np.zeros((n, 0)), True)
            continue
        stacked = np.concatenate([counts[i][:, design.used] for i in members])
        x0 = np.concatenate(
            [np.repeat(starts[i][1], n, axis=0) for i, n in zip(members, rounds, strict=True)]
        )
        x, _, converged = _fit_rounds(stacked, design, davidson, ridge, x0, max_iter, tol)
        for i, part in zip(members, np.split(x, np.cumsum(rounds)[:-1]), strict=True):
            solutions[i] = (part, converged)
    return solutions


def _bootstrap_groups(
    fits: Sequence[tuple[BTResult, _Design, np.ndarray]],
    counts: Sequence[np.ndarray],
    n_arms: int,
    ridge: float,
    ci: float,
    max_iter: int,
    tol: float,
    inflation: Sequence[float] | None = None,
) -> list[BootstrapResult]:
    """Bootstrap intervals of several groups' Bradley-Terry fits (see _solve_rounds).

    ``inflation`` (per group, ≥ 1) scales each round's distance from the full-data fit by its square root:
    the rater correction of ``rater_inflation``.
    """
    davidson = bool(fits) and fits[0][0].ties == "davidson"
    starts = [(design, x) for _, design, x in fits]
    solutions = _solve_rounds(starts, counts, davidson, ridge, max_iter, tol)
    factors = [1.0] * len(fits) if inflation is None else inflation
    return [
        _summarise_rounds(fit, design, _stretch(x, x_full, factor), n_arms, ci, converged)
        for (fit, design, x_full), (x, converged), factor in zip(fits, solutions, factors, strict=True)
    ]


def _stretch(x: np.ndarray, x_full: np.ndarray, factor: float) -> np.ndarray:
    return x if factor == 1.0 or x.shape[1] == 0 else x_full + math.sqrt(factor) * (x - x_full)


# --------------------------------------------------------------------------- style control


LENGTH_STEP = 0.1  # the normalised length difference is counted in steps of this size
MARKDOWN_STEP = 0.5
STYLE_FEATURES = ("length", "markdown")


def style_differences(
    left: np.ndarray, right: np.ndarray, left_size: np.ndarray, right_size: np.ndarray, step: float
) -> np.ndarray:
    """Per vote: (lower arm's size − higher arm's) / (sum of both), in [−1, 1], rounded to ``step``.

    The normalised difference of Chatbot Arena's style control, oriented to the canonical order of the
    pair, so that it enters the log-odds of "lower arm better". Rounding to a grid lets the fit and its
    bootstrap work on counts per (pair, grid value); a step of 0.1 moves no value by more than 0.05.
    """
    left, right = np.asarray(left), np.asarray(right)
    a, b = np.asarray(left_size, float), np.asarray(right_size, float)
    lower, higher = np.where(left < right, a, b), np.where(left < right, b, a)
    total = lower + higher
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(total > 0, (lower - higher) / total, 0.0)
    return np.round(z / step) * step


def _style_rows(pair: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (pair, style values) rows: per vote its row, and per row its pair and its style values."""
    grid = np.round(features / LENGTH_STEP * 4).astype(np.int64)  # exact: every value lies on a grid
    keys = np.column_stack([pair, grid])
    rows, row_of_vote = np.unique(keys, axis=0, return_inverse=True)
    values = np.zeros((len(rows), features.shape[1]))
    values[row_of_vote] = features
    return row_of_vote.ravel(), rows[:, 0], values


@dataclass(frozen=True)
class StyleFit:
    """Bradley-Terry with style covariates: length-controlled scores and each feature's effect."""

    scores: np.ndarray  # Elo-like, as BTResult.scores, with style held equal
    effects: dict[str, float]  # log-odds per unit of each normalised difference; NaN when not fitted
    converged: bool


def _fit_style(
    counts: np.ndarray,
    row_pair: np.ndarray,
    values: np.ndarray,
    n_arms: int,
    davidson: bool,
    ridge: float,
) -> tuple[StyleFit, _StyleDesign, np.ndarray, list[int]]:
    """Fit one [rows, 3] table of counts by (pair, style values); a feature enters when it varies."""
    lo, hi = np.triu_indices(n_arms, 1)
    used = np.flatnonzero(counts.sum(axis=1) > 0)
    active = np.unique(np.concatenate([lo[row_pair[used]], hi[row_pair[used]]]))
    position = np.full(n_arms, -1)
    position[active] = np.arange(len(active))
    features = [k for k in range(values.shape[1]) if np.any(values[used, k] != 0)]
    x = np.zeros((len(used), len(active) + len(features)))
    x[np.arange(len(used)), position[lo[row_pair[used]]]] = 1.0
    x[np.arange(len(used)), position[hi[row_pair[used]]]] = -1.0
    x[:, len(active) :] = values[used][:, features]
    xx = (x[:, :, None] * x[:, None, :]).reshape(len(used), x.shape[1] ** 2)
    design = _StyleDesign(active, used, x, xx)
    effects = dict.fromkeys(STYLE_FEATURES, math.nan)
    if design.m == 0:
        return StyleFit(np.full(n_arms, np.nan), effects, True), design, np.zeros((1, 0)), features
    x0 = np.zeros((1, design.q + davidson))
    solution, _, converged = _fit_rounds(counts[None, used], design, davidson, ridge, x0, 100, FIT_TOL)
    scores = _scores_from_theta(solution[:, : design.m], active, n_arms)[1][0]
    for j, k in enumerate(features):
        effects[STYLE_FEATURES[k]] = float(solution[0, design.m + j])
    return StyleFit(scores, effects, converged), design, solution, features


def _one_step_rounds(
    design: _StyleDesign, x_full: np.ndarray, counts: np.ndarray, davidson: bool, ridge: float
) -> np.ndarray:
    """Bootstrap rounds of a style fit by one Newton step each from the full-data fit.

    The one-step bootstrap (Andrews 2002, "higher-order improvements of a computationally attractive
    k-step bootstrap"): first-order equivalent to refitting every round. At the full-data solution each
    row's probabilities are fixed, so every round's gradient and Hessian are linear in its counts: a few
    matrix products instead of Newton iterations over rounds × rows.
    """
    if design.m == 0:
        return np.zeros((len(counts), 0))
    used = counts[:, design.used]
    parts = _objective(x_full, np.zeros((1, *used.shape[1:])), design, davidson, ridge)[1]
    grad, hess = _newton_system(x_full, parts, used, design, davidson, ridge)
    step = -np.linalg.solve(hess, grad[..., None])[..., 0]
    step[:, : design.m] -= step[:, : design.m].mean(axis=1, keepdims=True)
    return x_full + step


# --------------------------------------------------------------------------- clustered shares


def clustered_design_effect(
    y: np.ndarray, group: np.ndarray, prompt: np.ndarray, rater: np.ndarray | None, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: the mean of y, its two-way cluster-robust variance and the design effect (≥ 1).

    The variance is Cameron, Gelbach & Miller's (2011): clusters by prompt plus clusters by rater minus
    clusters by (prompt, rater), kept no smaller than either one-way variance. The design effect is that
    variance over the variance of independent votes: how many times fewer independent votes the data are
    worth. Without raters, prompts alone are the clusters.
    """
    y, group = np.asarray(y, float), np.asarray(group, np.int64)
    n = np.bincount(group, minlength=n_groups).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(group, y, n_groups) / n
    residual = y - np.nan_to_num(mean)[group]

    def by(key: np.ndarray) -> np.ndarray:
        """Per group: the sum over its clusters (equal key) of the squared sum of residuals."""
        clusters, cluster = np.unique(group * (int(key.max()) + 1) + key, return_inverse=True)
        sums = np.bincount(cluster.ravel(), residual, len(clusters))
        return np.bincount(clusters // (int(key.max()) + 1), sums * sums, n_groups)

    if len(y) == 0:
        nothing = np.full(n_groups, np.nan)
        return nothing, nothing.copy(), np.ones(n_groups)
    independent = np.bincount(group, residual * residual, n_groups)
    prompt_key = np.unique(np.asarray(prompt), return_inverse=True)[1].ravel().astype(np.int64)
    by_prompt = by(prompt_key)
    if rater is None:
        clustered = by_prompt
    else:
        rater_key = np.unique(np.asarray(rater), return_inverse=True)[1].ravel().astype(np.int64)
        by_rater = by(rater_key)
        both = by(prompt_key * (int(rater_key.max()) + 1) + rater_key)
        clustered = np.maximum.reduce([by_prompt + by_rater - both, by_prompt, by_rater])
    with np.errstate(invalid="ignore", divide="ignore"):
        deff = np.where(independent > 0, clustered / independent, 1.0)
        variance = clustered / (n * n)
    return mean, variance, np.maximum(deff, 1.0)


def rater_inflation(
    left: np.ndarray,
    right: np.ndarray,
    outcome: np.ndarray,
    prompt: np.ndarray,
    rater: np.ndarray,
    n_arms: int,
) -> float:
    """How much wider than the prompt bootstrap's a group's intervals must be to account for raters (≥ 1).

    Resampling prompts and raters together by product weights (the pigeonhole bootstrap) counts the noise of
    single votes about three times over when, as here, it dominates (Owen 2007), and intervals come out far
    too wide. Instead the rounds resample prompts, and their spread is stretched by this factor: the
    two-way clustered variance (prompts + raters − both, Cameron, Gelbach & Miller 2011) over the
    prompt-clustered one, for each pair's share of votes won by its lower arm, summed over pairs with
    weight n² (the variance of their counts).
    """
    if len(left) == 0:
        return 1.0
    n_pairs = n_arms * (n_arms - 1) // 2
    label = canonical_label(left, right, outcome)
    share = np.select([label == LOWER_BETTER, label == HIGHER_BETTER], [1.0, 0.0], 0.5)
    pair = pair_index(left, right, n_arms)
    n = np.bincount(pair, minlength=n_pairs).astype(float)
    _, two_way, _ = clustered_design_effect(share, pair, prompt, rater, n_pairs)
    _, by_prompt, _ = clustered_design_effect(share, pair, prompt, None, n_pairs)
    with np.errstate(invalid="ignore"):
        both, prompts_only = np.nansum(n * n * two_way), np.nansum(n * n * by_prompt)
    return float(max(1.0, both / prompts_only)) if prompts_only > 0 else 1.0


# --------------------------------------------------------------------------- win rates


class WinRates(NamedTuple):
    """[n_arms, n_arms] tables for ordered pairs (row arm vs column arm); the diagonal is NaN/0."""

    wins: np.ndarray  # votes where the row arm won
    ties: np.ndarray  # ties and "both bad" between the two (symmetric)
    n: np.ndarray  # all votes between the two (symmetric)
    rate: np.ndarray  # (wins + ties/2) / n
    lo: np.ndarray  # Wilson interval of rate, on the effective number of votes (see win_rate_matrix)
    hi: np.ndarray
    design_effect: np.ndarray  # (symmetric) how many votes of the pair are worth one independent vote


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
    left: np.ndarray,
    right: np.ndarray,
    outcome: np.ndarray,
    n_arms: int,
    *,
    ci: float = 0.95,
    prompt: np.ndarray | None = None,
    rater: np.ndarray | None = None,
) -> WinRates:
    """Head-to-head table: for each ordered pair, the share of its votes the row arm won (tie = half).

    With ``prompt`` (and ``rater``), the Wilson interval is taken on the pair's effective number of votes,
    n / design effect (Kish), with the design effect from two-way clustered variance
    (``clustered_design_effect``): ten votes of one rater on one prompt are not ten independent votes.
    """
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
    deff = np.ones(shape)
    if prompt is not None and len(left):
        n_pairs = n_arms * (n_arms - 1) // 2
        label = canonical_label(left, right, outcome)
        lower_share = np.select([label == LOWER_BETTER, label == HIGHER_BETTER], [1.0, 0.0], 0.5)
        pair_deff = clustered_design_effect(
            lower_share, pair_index(left, right, n_arms), prompt, rater, n_pairs
        )[2]
        lo_arm, hi_arm = np.triu_indices(n_arms, 1)
        deff[lo_arm, hi_arm] = deff[hi_arm, lo_arm] = pair_deff
    effective = n / deff
    lo, hi = wilson_interval(rate * effective, effective, ci)
    return WinRates(wins, ties, n, rate, lo, hi, deff)


# --------------------------------------------------------------------------- verdict


ALPHA = 0.05  # the chance of any false verdict in an experiment: all its categories, however often read
MIN_DECISIVE = 10  # decisive votes between leader and runner-up before any verdict
# Below this many prompts leaning one way or the other, the exact per-prompt sign test must reject too: with
# fewer prompts the bootstrap's standard error, and so the normal mixture, cannot be trusted.
SIGN_GUARD_PROMPTS = 30
POWER = 0.8  # the chance of a verdict that "votes needed" plans for
# "Votes needed" is promised up to this many times the votes so far; beyond, no promise is worth its name.
MAX_PLAN_FACTOR = 20.0
# A sceptical prior for planning: a change of depth rarely moves preference by more than 100 points (64%
# of decisive votes), so the lead is shrunk under N(0, 50²) points.
PRIOR_EFFECT = 50.0
SIGN_PRIOR = 1.0  # Beta(a, a) mixture of the per-prompt sign test: uniform, Robbins' classical choice
SEQUENTIAL_DESIGN_VOTES = 100  # the normal mixture is tightest near this many decisive votes
_MIXTURE_SPREAD = 8.0  # nρ² at the design point: the boundary is within 10% of its best from n/4 to 10n


def sign_mixture_pvalue(wins: int, n: int, *, prior: float = SIGN_PRIOR) -> float:
    """Anytime-valid p-value that prompts favour one arm, from per-prompt signs (Robbins' mixture).

    Under the null each of the n prompts that lean one way leans to either arm with probability 1/2,
    independently. M = ∫ Π p^k (1−p)^(n−k) dBeta(a, a) / 2^−n is a nonnegative martingale under it, so by
    Ville's inequality P(M ever reaches 1/α) ≤ α however often it is read: p = min(1, 1/M).
    """
    from scipy.special import betaln  # on first use: see the note on imports

    if n == 0:
        return 1.0
    log_m = betaln(prior + wins, prior + n - wins) - betaln(prior, prior) + n * math.log(2.0)
    return float(min(1.0, math.exp(-log_m)))


def _mixture_rho2(design_votes: float) -> float:
    return _MIXTURE_SPREAD / design_votes


def sequential_pvalue(z: float, n: float, *, design_votes: float = SEQUENTIAL_DESIGN_VOTES) -> float:
    """Anytime-valid p-value for a standardised difference z after n decisive votes (normal mixture).

    The asymptotic confidence sequence of Waudby-Smith et al. (2021, "Time-uniform central limit theory"):
    with a consistent standard error the standardised sum behaves like Brownian motion in n, and Robbins'
    normal mixture M = (1+u)^−½ · exp(z²·u / (2(1+u))), u = nρ², is then a martingale under "no difference";
    p = min(1, 1/M) stays valid however often it is read.
    """
    if not (math.isfinite(z) and n > 0):
        return 1.0
    u = n * _mixture_rho2(design_votes)
    log_m = z * z * u / (2 * (1 + u)) - 0.5 * math.log1p(u)
    return float(min(1.0, math.exp(-log_m)))


def sequential_threshold(n: float, alpha: float, *, design_votes: float = SEQUENTIAL_DESIGN_VOTES) -> float:
    """The |z| at which ``sequential_pvalue`` reaches alpha after n decisive votes."""
    u = n * _mixture_rho2(design_votes)
    return math.sqrt((1 + 1 / u) * (2 * math.log(1 / alpha) + math.log1p(u)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject where adjusted ≤ α, family-wise error ≤ α.

    With anytime-valid p-values the guarantee holds over all looks too: a false rejection at any time needs
    some true null's p-value below α/(number of true nulls) at that time.
    """
    p = np.asarray(pvalues, float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    result = np.empty(len(p))
    result[order] = adjusted
    return result.tolist()


def prompt_signs(
    left: np.ndarray, right: np.ndarray, outcome: np.ndarray, prompt: np.ndarray, a: int, b: int
) -> tuple[int, int]:
    """Prompts whose decisive votes between arms a and b favour a (wins), and those favouring either (n)."""
    left, right, outcome = np.asarray(left), np.asarray(right), np.asarray(outcome)
    between = ((left == a) & (right == b)) | ((left == b) & (right == a))
    decisive = between & (outcome <= RIGHT)
    if not decisive.any():
        return 0, 0
    a_won = np.where(outcome[decisive] == LEFT, left[decisive], right[decisive]) == a
    prompts, index = np.unique(np.asarray(prompt)[decisive], return_inverse=True)
    net = np.bincount(index.ravel(), np.where(a_won, 1.0, -1.0), len(prompts))
    return int(np.count_nonzero(net > 0)), int(np.count_nonzero(net))


@dataclass(frozen=True)
class Contest:
    """The leader against the runner-up in one group, before the family of groups is accounted for."""

    leader: int | None
    runner_up: int | None
    difference: float  # score points, leader − runner-up
    lo: float  # percentile interval of the difference over paired bootstrap rounds
    hi: float
    se: float
    n_decisive: int  # decisive votes between the two
    n_votes: int  # all votes in the group
    p_sign: float | None  # anytime-valid per-prompt sign test; None when not used
    p_sequential: float  # anytime-valid normal mixture on the bootstrap-standardised difference
    n_leaning: int  # prompts whose decisive votes between the two lean one way
    sign_share: float  # share of those that lean to the leader
    inflation: float = 1.0  # the group's rater_inflation
    n_raters: int = 0  # raters with votes in the group; 0 when not known
    n_prompts: int = 0  # prompts with votes in the group, the bootstrap's clusters; 0 when not known

    @property
    def p_value(self) -> float:
        """The normal mixture's, past the minimum of votes; below SIGN_GUARD_PROMPTS leaning prompts the sign
        test must reject too (an intersection-union test: no larger error than either test alone)."""
        if self.leader is None or self.n_decisive < MIN_DECISIVE:
            return 1.0
        if self.p_sign is not None and self.n_leaning < SIGN_GUARD_PROMPTS:
            return max(self.p_sign, self.p_sequential)
        return self.p_sequential


def contest(
    scores: np.ndarray,
    samples: np.ndarray,
    votes: Mapping[str, np.ndarray],
    *,
    ci: float = 0.95,
    use_sign_test: bool = True,
    inflation: float = 1.0,
) -> Contest:
    """Leader and runner-up by score, the interval of their difference from the same bootstrap rounds,
    and both anytime-valid tests. ``votes`` are the group's votes (left, right, outcome, prompt, and rater
    where known)."""
    from scipy import stats as sps  # on first use: see the note on imports

    scores = np.asarray(scores, float)
    ranked = [int(i) for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf)) if not np.isnan(scores[i])]
    n_votes = len(votes["left"])
    if len(ranked) < 2:
        p_sign = 1.0 if use_sign_test else None
        return Contest(
            None, None, math.nan, math.nan, math.nan, math.nan, 0, n_votes, p_sign, 1.0, 0, math.nan
        )
    best, second = ranked[0], ranked[1]
    rounds = samples[:, best] - samples[:, second]
    lo, hi = np.quantile(rounds, [(1 - ci) / 2, (1 + ci) / 2])
    difference = float(scores[best] - scores[second])
    # The standard error from the interval, not the rounds' sd: robust to the odd round where an arm lost
    # its votes. The claim is one-sided (the leader is better), and early intervals are skewed, so the
    # distance from the estimate down to the lower bound counts when it is the larger.
    z_ci = sps.norm.ppf((1 + ci) / 2)
    se = float(max((hi - lo) / (2 * z_ci), (difference - lo) / z_ci))
    left, right, outcome = votes["left"], votes["right"], votes["outcome"]
    between = ((left == best) & (right == second)) | ((left == second) & (right == best))
    n_decisive = int(np.count_nonzero(between & (outcome <= RIGHT)))
    wins, leaning = prompt_signs(left, right, outcome, votes["prompt"], best, second)
    p_sign = sign_mixture_pvalue(wins, leaning) if use_sign_test else None
    z = difference / se if se > 0 else (math.inf if difference > 0 else 0.0)
    p_sequential = sequential_pvalue(z, n_decisive)
    share = wins / leaning if leaning else math.nan
    n_raters = len(np.unique(votes["rater"])) if "rater" in votes else 0
    n_prompts = len(np.unique(votes["prompt"]))
    return Contest(
        best,
        second,
        difference,
        float(lo),
        float(hi),
        se,
        n_decisive,
        n_votes,
        p_sign,
        p_sequential,
        leaning,
        share,
        inflation,
        n_raters,
        n_prompts,
    )


class Plan(NamedTuple):
    """What "votes needed" promises: ``votes`` more, for a verdict with the planned power if the leader is
    truly at least ``difference`` points ahead; ``raters``: new raters at the current votes per rater."""

    votes: int
    difference: float
    raters: int | None


def votes_needed(
    found: Contest, *, alpha: float, power: float = POWER, use_sign_test: bool = True
) -> Plan | None:
    """More votes in the group for a verdict with probability ``power`` if the lead is real; None if level.

    The planned lead is the lower ``power`` bound of the lead's posterior under a sceptical prior
    N(0, PRIOR_EFFECT²): the leader is the luckiest arm so far, and its lead shows it. The standard error is
    itself an estimate from the prompts seen, and a small one by luck would promise too soon too: the plan
    takes its upper ``power`` bound (chi-squared on prompts − 1 degrees of freedom, Browne 1995). The new
    votes are planned like the ones so far, on new prompts and from new raters at the current votes per
    rater, so that every part of the variance shrinks with their number; the smallest growth factor f is
    found at which a study of f times the votes, whose true lead is the planned one, reaches the
    anytime-valid threshold with probability ``power``. The votes so far are not counted as already
    favourable. Below SIGN_GUARD_PROMPTS leaning prompts the sign test decides too, so the plan goes past
    them. None when there is no lead (less than one standard error), or when no number up to
    MAX_PLAN_FACTOR times the votes so far gets there.
    ``alpha`` is the level the group's test must reach (α / number of groups plans for Holm's strictest
    step). ``simulate_study`` checks the promised power.
    """
    from scipy import stats as sps  # on first use: see the note on imports

    if found.leader is None or not (found.se > 0) or found.difference < found.se:
        return None  # level: no lead to plan for
    z_power = sps.norm.ppf(power)
    se = found.se
    if found.n_prompts > 1:
        se *= math.sqrt((found.n_prompts - 1) / sps.chi2.ppf(1 - power, found.n_prompts - 1))
    shrink = PRIOR_EFFECT**2 / (PRIOR_EFFECT**2 + se**2)
    planned = found.difference * shrink - z_power * se * math.sqrt(shrink)
    if planned <= 0:
        return None

    def enough(f: float) -> bool:
        n_decisive = f * max(found.n_decisive, 1)
        if n_decisive < MIN_DECISIVE:
            return False
        if use_sign_test and f * found.n_leaning < SIGN_GUARD_PROMPTS:
            return False
        return planned >= (sequential_threshold(n_decisive, alpha) + z_power) * se / math.sqrt(f)

    passing = next((f for f in np.geomspace(1.0, MAX_PLAN_FACTOR, 200) if enough(f)), None)
    if passing is None:
        return None
    votes = max(1, math.ceil(found.n_votes * (passing - 1)))
    raters = math.ceil(votes * found.n_raters / found.n_votes) if found.n_raters and found.n_votes else None
    return Plan(votes, planned, raters)


def verdicts(
    contests: Sequence[Contest],
    names: Sequence[str],
    *,
    family: Sequence[int],
    alpha: float = ALPHA,
    power: float = POWER,
    use_sign_test: bool = True,
) -> list[dict[str, Any]]:
    """One verdict per group; the groups in ``family`` share the error rate alpha by Holm's method.

    A winner is declared when the leader has at least MIN_DECISIVE decisive votes against the runner-up,
    the interval of their difference clears zero, and the Holm-adjusted anytime-valid p-value is at most
    alpha. Groups outside the family (e.g. the only category, when it is the whole experiment) get the
    verdict of the family member with the same data, passed in as the same contest.
    """
    adjusted = dict(zip(family, holm([contests[i].p_value for i in family]), strict=True))
    results = []
    for i, found in enumerate(contests):
        p_adjusted = adjusted.get(i, next(adjusted[j] for j in family if contests[j] is found))
        results.append(_verdict(found, names, p_adjusted, alpha / len(family), alpha, power, use_sign_test))
    return results


def _verdict(
    found: Contest,
    names: Sequence[str],
    p_adjusted: float,
    plan_alpha: float,
    alpha: float,
    power: float,
    use_sign_test: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "leader": None,
        "runner_up": None,
        "winner": None,
        "declared": False,
        "difference": found.difference,
        "difference_low": found.lo,
        "difference_high": found.hi,
        "difference_se": found.se,
        "rater_inflation": found.inflation,
        "n_decisive": found.n_decisive,
        "n_leaning_prompts": found.n_leaning,
        "leaning_to_leader": found.sign_share,
        "min_decisive": MIN_DECISIVE,
        "p_sign": found.p_sign,
        "p_sequential": found.p_sequential,
        "p_adjusted": p_adjusted,
        "alpha": alpha,
        "votes_needed": None,
        "planned_difference": None,  # the lead "votes needed" plans for (the lead so far, shrunk)
        "raters_needed": None,  # new raters the planned votes come from, at the current votes per rater
    }
    if found.leader is None:
        result["message"] = "not enough votes yet: fewer than two arms have votes"
        return result
    lead, second = names[found.leader], names[found.runner_up]
    result.update(leader=lead, runner_up=second)
    interval = f"95% interval {found.lo:.0f} to {found.hi:.0f}"
    if found.n_decisive >= MIN_DECISIVE and found.lo > 0 and p_adjusted <= alpha:
        result.update(winner=lead, declared=True, votes_needed=0)
        result["message"] = (
            f"{lead} is preferred to {second}: {found.difference:.0f} points ahead ({interval})"
        )
        return result
    plan = votes_needed(found, alpha=plan_alpha, power=power, use_sign_test=use_sign_test)
    if plan is not None:
        result.update(votes_needed=plan.votes, planned_difference=plan.difference, raters_needed=plan.raters)
    if found.n_decisive < MIN_DECISIVE:
        result["message"] = (
            f"not enough votes yet: {lead} and {second} have {found.n_decisive} decisive votes between them; "
            f"a verdict needs at least {MIN_DECISIVE}"
        )
    elif plan is None and found.difference > found.se:
        result["message"] = (
            f"no clear winner yet: {lead} leads {second} by {found.difference:.0f} points ({interval}), "
            f"too little to promise a verdict within {MAX_PLAN_FACTOR:.0f} times the votes so far"
        )
    elif plan is None:
        result["message"] = f"no clear winner yet: {lead} and {second} are level ({interval})"
    else:
        who = f", from about {plan.raters} new raters," if plan.raters else ""
        result["message"] = (
            f"no clear winner yet: {lead} leads {second} by {found.difference:.0f} points ({interval}); "
            f"about {plan.votes} more votes on new prompts{who} give a verdict with {power:.0%} probability "
            f"if {lead} is truly at least {plan.difference:.0f} points ahead"
        )
    return result


def length_control_note(raw: Mapping[str, Any], controlled: Mapping[str, Any]) -> str:
    """In words: does the verdict change when answer length (and markdown) is held equal?"""
    before, after = raw.get("winner"), controlled.get("winner")
    if before == after:
        return "Length control does not change the verdict."
    if before and not after:
        return f"Under length control no arm is preferred: {before}'s lead goes with its answers' length."
    if after and not before:
        return f"Under length control {after} is preferred: answer length hid its lead."
    return f"The verdict flips under length control: {after}, not {before}, is preferred."


# --------------------------------------------------------------------------- position bias


def position_bias(
    outcome: np.ndarray,
    *,
    ci: float = 0.95,
    prompt: np.ndarray | None = None,
    rater: np.ndarray | None = None,
) -> dict[str, Any]:
    """Share of decisive votes that went to the left side, with a score test against 1/2.

    With ``prompt`` (and ``rater``) the votes count as their effective number, n / design effect
    (``clustered_design_effect``): a rater who always picks the left side is one source of bias, not
    hundreds of independent ones. The interval is Wilson's on that effective number and the p-value the
    score test it inverts, so "biased" (p < 1 − ci) is exactly "the interval excludes 1/2".
    """
    from scipy import stats as sps  # on first use: see the note on imports

    outcome = np.asarray(outcome)
    decisive = outcome <= RIGHT
    left_wins = int(np.count_nonzero(outcome == LEFT))
    n_decisive = int(np.count_nonzero(decisive))
    if n_decisive == 0:
        return {
            "n_decisive": 0,
            "left_wins": 0,
            "left_share": math.nan,
            "design_effect": 1.0,
            "p_value": 1.0,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "biased": False,
        }
    share = left_wins / n_decisive
    deff = 1.0
    if prompt is not None:
        y = (outcome[decisive] == LEFT).astype(float)
        groups = np.zeros(n_decisive, np.int64)
        raters = None if rater is None else np.asarray(rater)[decisive]
        deff = float(clustered_design_effect(y, groups, np.asarray(prompt)[decisive], raters, 1)[2][0])
    effective = n_decisive / deff
    z = (share - 0.5) / math.sqrt(0.25 / effective)
    p_value = float(2 * sps.norm.sf(abs(z)))
    lo, hi = wilson_interval(share * effective, effective, ci)
    return {
        "n_decisive": n_decisive,
        "left_wins": left_wins,
        "left_share": share,
        "design_effect": deff,
        "p_value": p_value,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "biased": bool(p_value < 1 - ci),
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


def _ratings(
    unit: np.ndarray, rater: np.ndarray, value: np.ndarray, n_values: int | None = None
) -> tuple[_Ratings, np.ndarray]:
    """Compact, de-duplicated ratings and the positions of the kept ones in the input.

    With ``n_values`` the values are taken as they are (0..n_values−1), so that their codes keep a meaning.
    """
    units, unit_idx = np.unique(np.asarray(unit), return_inverse=True)
    raters, rater_idx = np.unique(np.asarray(rater), return_inverse=True)
    if n_values is None:
        values, value_idx = np.unique(np.asarray(value), return_inverse=True)
        n_values = len(values)
    else:
        value_idx = np.asarray(value, np.int64)
    unit_idx, rater_idx, value_idx = unit_idx.ravel(), rater_idx.ravel(), value_idx.ravel()
    key = unit_idx.astype(np.int64) * len(raters) + rater_idx
    _, last_from_end = np.unique(key[::-1], return_index=True)
    kept = len(key) - 1 - last_from_end
    ratings = _Ratings(unit_idx[kept], rater_idx[kept], value_idx[kept], raters, len(units), n_values)
    return ratings, kept


def _value_counts(ratings: _Ratings) -> np.ndarray:
    """[units, values] number of ratings of each value per unit."""
    cells = ratings.n_units * ratings.n_values
    flat = np.bincount(ratings.unit * ratings.n_values + ratings.value, minlength=cells)
    return flat.reshape(ratings.n_units, ratings.n_values)


def _alpha(ratings: _Ratings, *, mirrored: bool = False) -> float:
    counts = _value_counts(ratings)
    if mirrored:
        # Every unit also counts with its two arms' labels exchanged (lower better ↔ higher better): the
        # same disagreement within units, and chance agreement that no longer depends on arm numbering.
        swap = [HIGHER_BETTER, LOWER_BETTER, CANON_TIE, CANON_BOTH_BAD]
        counts = np.vstack([counts, counts[:, swap]])
    # Only units rated twice or more carry agreement. Undefined without one, or with one value among them.
    counts = counts[counts.sum(axis=1) >= 2]
    if np.count_nonzero(counts.sum(axis=0)) < 2 or len(counts) == 0:
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
    exclude_too_fast: bool = False,
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


def _kept(votes: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The kept votes' arrays, with defaults for the optional ones (category, pseudo)."""
    n = int(keep.sum())
    kept = {key: np.asarray(votes[key])[keep] for key in ("left", "right", "outcome", "prompt", "rater")}
    kept["category"] = np.asarray(votes["category"])[keep] if "category" in votes else np.zeros(n, np.int64)
    kept["pseudo"] = np.asarray(votes["pseudo"], bool)[keep] if "pseudo" in votes else np.zeros(n, bool)
    return kept


def _style_features(votes: Mapping[str, np.ndarray], keep: np.ndarray, kept: dict) -> np.ndarray | None:
    """[votes, 2]: normalised length and markdown differences (lower − higher arm); None without lengths."""
    if "left_length" not in votes:
        return None
    left, right = kept["left"], kept["right"]
    columns = [
        style_differences(
            left,
            right,
            np.asarray(votes["left_length"])[keep],
            np.asarray(votes["right_length"])[keep],
            LENGTH_STEP,
        )
    ]
    if "left_markdown" in votes:
        a, b = np.asarray(votes["left_markdown"])[keep], np.asarray(votes["right_markdown"])[keep]
        columns.append(style_differences(left, right, a, b, MARKDOWN_STEP))
    else:
        columns.append(np.zeros(len(left)))
    return np.column_stack(columns)


def _quantiles(values: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def _style_summary(
    fit: StyleFit, design: _StyleDesign, features: list[int], x: np.ndarray, n_arms: int, ci: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Length-controlled scores with intervals and each feature's effect; also the rounds' scores."""
    samples = _scores_from_theta(x[:, : design.m], design.active, n_arms)[1]
    lo, hi = np.full(n_arms, np.nan), np.full(n_arms, np.nan)
    if design.m:
        lo[design.active], hi[design.active] = np.quantile(
            samples[:, design.active], [(1 - ci) / 2, (1 + ci) / 2], axis=0
        )
    effects: dict[str, Any] = {}
    # Points for the size ratio a reader pictures: one answer twice as long as the other (z = 1/3), one
    # with markdown where the other has none (z = 1).
    reference = {"length": 1 / 3, "markdown": 1.0}
    for j, k in enumerate(features):
        name = STYLE_FEATURES[k]
        beta_lo, beta_hi = _quantiles(x[:, design.m + j], ci)
        scale = ELO_SCALE * reference[name]
        effects[name] = {
            "log_odds": fit.effects[name],
            "log_odds_low": beta_lo,
            "log_odds_high": beta_hi,
            "points": scale * fit.effects[name],
            "points_low": scale * beta_lo,
            "points_high": scale * beta_hi,
        }
    summary = {
        "scores": _jsonable(fit.scores),
        "ci_low": _jsonable(lo),
        "ci_high": _jsonable(hi),
        "effects": effects,
        "converged": fit.converged,
    }
    return summary, samples


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
    exclude_too_fast: bool = False,
    exclude_flagged: bool = True,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """All statistics, overall and per category, as a JSON-ready dict (NaN → None).

    ``votes`` follows the module's input convention. Exclusions are applied first (masks that are absent
    count as all False). Bootstrap: one two-way Poisson bootstrap (prompts and raters, _resampled_totals)
    serves every group and both fits, raw and length-controlled, so a category's rounds and the overall
    rounds come from the same resamples. Verdicts: see ``verdicts``; the family is the categories and, with
    more than one category, the overall group. Agreement units are (prompt, arm pair); values are
    canonical labels, mirrored (``_alpha``) so that alpha does not depend on the arms' order.
    """
    clock = time.perf_counter
    timings: dict[str, float] = {}
    started = clock()
    names = list(arm_names) if arm_names is not None else [f"arm {i}" for i in range(n_arms)]
    davidson = ties == "davidson"
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
    kept = _kept(votes, keep)
    left, right, outcome, prompt, rater, category = (
        kept[k] for k in ("left", "right", "outcome", "prompt", "rater", "category")
    )
    if len(category) and (category.min() < 0 or category.max() >= n_categories):
        raise ValueError(f"category must lie in 0..{n_categories - 1}")
    pair, cls = _pair_class(left, right, outcome, n_arms)
    n_pairs = n_arms * (n_arms - 1) // 2
    features = _style_features(votes, keep, kept)
    if features is None:
        row_of_vote, row_pair, row_values = pair, np.arange(n_pairs), np.zeros((n_pairs, 0))
    else:
        row_of_vote, row_pair, row_values = _style_rows(pair, features)
    # Counts are kept per (style row, outcome class); without style control a row is a pair. The raw
    # Bradley-Terry counts are the rows of each pair added up.
    n_rows = len(row_pair)
    to_pairs = np.zeros((n_rows, n_pairs))
    to_pairs[np.arange(n_rows), row_pair] = 1.0
    column = row_of_vote * 3 + cls
    groups = [("overall", np.ones(len(left), bool))] + [
        (f"category {c}", category == c) for c in range(n_categories)
    ]
    timings["prepare"] = clock() - started

    part = clock()
    row_full = np.stack([np.bincount(column[m], minlength=n_rows * 3) for _, m in groups]).astype(float)
    row_full = row_full.reshape(len(groups), n_rows, 3)
    raw_full = np.einsum("gsc,sp->gpc", row_full, to_pairs)
    fits = [_fit_counts(counts, n_arms, ties, ridge, 100, FIT_TOL) for counts in raw_full]
    if features is not None:
        style_fits = [_fit_style(c, row_pair, row_values, n_arms, davidson, ridge) for c in row_full]
    timings["fit"] = clock() - part

    part = clock()
    rng = np.random.default_rng(seed)
    # Prompts are resampled (a prompt belongs to one category, so each category draws its prompts'
    # weights); raters enter through rater_inflation.
    row_rounds = [np.zeros((n_rounds, n_rows, 3))]
    for _, mask in groups[1:]:
        totals = _resampled_totals(prompt[mask], column[mask], n_rows * 3, n_rounds, rng)
        row_rounds.append(totals.reshape(n_rounds, n_rows, 3))
        row_rounds[0] += row_rounds[-1]
    raw_rounds = [np.einsum("rsc,sp->rpc", rounds, to_pairs) for rounds in row_rounds]
    timings["resample"] = clock() - part

    part = clock()
    inflation = [
        rater_inflation(left[m], right[m], outcome[m], prompt[m], rater[m], n_arms) for _, m in groups
    ]
    boots = _bootstrap_groups(fits, raw_rounds, n_arms, ridge, ci, 100, ROUND_TOL, inflation)
    style: list[tuple[dict[str, Any], np.ndarray]] = []
    if features is not None:
        for (fit, design, x_full, used), rounds, factor in zip(
            style_fits, row_rounds, inflation, strict=True
        ):
            x = _stretch(_one_step_rounds(design, x_full, rounds, davidson, ridge), x_full, factor)
            style.append(_style_summary(fit, design, used, x, n_arms, ci))
    timings["bootstrap_fits"] = clock() - part

    part = clock()
    family = list(range(len(groups))) if n_categories > 1 else [0]
    group_votes = [
        {k: kept[k][mask & ~kept["pseudo"]] for k in ("left", "right", "outcome", "prompt", "rater")}
        for _, mask in groups
    ]
    contests = [
        contest(boot.fit.scores, boot.samples, gv, ci=ci, inflation=k)
        for boot, gv, k in zip(boots, group_votes, inflation, strict=True)
    ]
    if n_categories == 1:
        contests[1] = contests[0]
    raw_verdicts = verdicts(contests, names, family=family, alpha=alpha)
    style_verdicts: list[dict[str, Any]] = []
    if style:
        style_contests = [
            contest(
                np.array([np.nan if v is None else v for v in s["scores"]]),
                samples,
                gv,
                ci=ci,
                use_sign_test=False,
                inflation=k,
            )
            for (s, samples), gv, k in zip(style, group_votes, inflation, strict=True)
        ]
        if n_categories == 1:
            style_contests[1] = style_contests[0]
        style_verdicts = verdicts(style_contests, names, family=family, alpha=alpha, use_sign_test=False)
    timings["verdict"] = clock() - part

    part = clock()
    n_values = CANON_BOTH_BAD + 1
    judged = ~kept["pseudo"]
    label = canonical_label(left, right, outcome)
    agreement_unit = prompt.astype(np.int64) * n_pairs + pair
    ratings, rated = _ratings(agreement_unit[judged], rater[judged], label[judged], n_values)
    timings["agreement"] = clock() - part

    results: dict[str, Any] = {}
    part_times = {"win_rates": 0.0, "position_bias": 0.0}
    part_times["agreement"] = timings.pop("agreement")
    for index, ((name, mask), boot) in enumerate(zip(groups, boots, strict=True)):
        part = clock()
        table = win_rate_matrix(
            left[mask], right[mask], outcome[mask], n_arms, ci=ci, prompt=prompt[mask], rater=rater[mask]
        )
        part_times["win_rates"] += clock() - part
        part = clock()
        asked = mask & judged
        bias = position_bias(outcome[asked], ci=ci, prompt=prompt[asked], rater=rater[asked])
        part_times["position_bias"] += clock() - part
        part = clock()
        group_ratings = ratings.subset(mask[judged][rated])
        agreement = _alpha(group_ratings, mirrored=True)
        per_rater = _majority_agreement(group_ratings)
        part_times["agreement"] += clock() - part
        results[name] = {
            "n_votes": int(mask.sum()),
            "n_ties": int(np.count_nonzero(outcome[mask] == TIE)),
            "n_both_bad": int(np.count_nonzero(outcome[mask] == BOTH_BAD)),
            "n_identical_as_ties": int(np.count_nonzero(mask & kept["pseudo"])),
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
            "verdict": _json_dict(raw_verdicts[index]),
            "position_bias": _json_dict(bias),
            "krippendorff_alpha": _nan_to_none(agreement),
            "rater_agreement": per_rater,
            "length_controlled": None,
        }
        if style:
            controlled = {**style[index][0], "verdict": _json_dict(style_verdicts[index])}
            controlled["note"] = length_control_note(raw_verdicts[index], style_verdicts[index])
            results[name]["length_controlled"] = controlled
    timings.update(part_times)
    timings["total"] = clock() - started
    return {
        "arms": names,
        "n_arms": n_arms,
        "settings": {
            "ties": ties,
            "n_rounds": n_rounds,
            "seed": seed,
            "ci": ci,
            "ridge": ridge,
            "alpha": alpha,
            "min_decisive": MIN_DECISIVE,
            "power": POWER,
            "family_size": len(family),
        },
        "exclusions": exclusions,
        "overall": results["overall"],
        "categories": [results[f"category {c}"] for c in range(n_categories)],
        "timings_s": timings,
    }


def _json_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _nan_to_none(v) if isinstance(v, float) else v for k, v in values.items()}


# --------------------------------------------------------------------------- simulation and benchmark


def simulate_votes(
    true_scores: Sequence[float] | np.ndarray,
    *,
    n_prompts: int,
    raters_per_prompt: int = 1,
    pairs: int = 1,
    tie_prob: float = 0.2,
    left_bias: float = 0.0,
    seed: int | np.random.Generator = 0,
    n_raters: int = 50,
    both_bad_share: float = 0.25,
    exclusion_rate: float = 0.0,
    prompt_sd: float = 0.0,
    rater_sd: float = 0.0,
    arm_length: Sequence[float] | np.ndarray | None = None,
    length_effect: float = 0.0,
    length_spread: float = 0.3,
    first_prompt: int = 0,
    rater_effects: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Votes from a Davidson model with known scores, in the module's input convention.

    true_scores: [n_arms] on the score scale, or [n_categories, n_arms] (prompt p is in category
    p % n_categories). Each prompt gets ``pairs`` distinct random arm pairs, each rated by
    ``raters_per_prompt`` distinct raters out of ``n_raters``; sides are random. ν = 2·tie_prob/(1−tie_prob),
    so two equal arms tie with probability tie_prob; a share ``both_bad_share`` of ties is "both bad".
    left_bias is a log-odds bonus for the left side. The masks gold_failed, too_fast and flagged are each
    set at random with probability ``exclusion_rate``.

    Random effects, in score points: every (prompt, arm) gets N(0, prompt_sd²) and every (rater, arm)
    N(0, rater_sd²) added to the arm's score (prompts where an arm happens to shine; raters with their own
    taste). ``arm_length`` (mean tokens per arm, [n_arms] or [n_categories, n_arms]) gives each output a
    log-normal length (sd ``length_spread``) and adds ``length_effect`` log-odds per unit of normalised
    length difference (left − right)/(left + right) to the left side. Prompt ids start at ``first_prompt``.
    ``rater_effects`` ([n_raters, n_arms] score points) gives the raters' tastes instead of drawing them,
    so that the same raters can vote again in a later call.
    """
    rng = _rng(seed)
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
    local_prompt = np.repeat(unit_prompt, raters_per_prompt)
    prompt = local_prompt + first_prompt
    category = prompt % n_categories
    swap = rng.random(len(prompt)) < 0.5
    left = np.where(swap, pair_hi[vote_pair], pair_lo[vote_pair])
    right = np.where(swap, pair_lo[vote_pair], pair_hi[vote_pair])

    strength = theta[category, left] - theta[category, right]
    if prompt_sd > 0:
        effect = rng.normal(0.0, prompt_sd / ELO_SCALE, (n_prompts, n_arms))
        strength += effect[local_prompt, left] - effect[local_prompt, right]
    if rater_effects is None and rater_sd > 0:
        rater_effects = rng.normal(0.0, rater_sd, (n_raters, n_arms))
    if rater_effects is not None:
        taste = np.asarray(rater_effects, float) / ELO_SCALE
        strength += taste[rater, left] - taste[rater, right]
    lengths: dict[str, np.ndarray] = {}
    if arm_length is not None:
        mean_length = np.broadcast_to(np.atleast_2d(np.asarray(arm_length, float)), (n_categories, n_arms))
        output = mean_length[np.arange(n_prompts) % n_categories] * rng.lognormal(
            0.0, length_spread, (n_prompts, n_arms)
        )
        left_length, right_length = output[local_prompt, left], output[local_prompt, right]
        strength += length_effect * (left_length - right_length) / (left_length + right_length)
        lengths = {"left_length": np.round(left_length), "right_length": np.round(right_length)}
    half = 0.5 * (strength + left_bias)
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
        **lengths,
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
    style: bool = True,
    repeats: int = 3,
) -> dict[str, Any]:
    """Time ``summarize`` on simulated votes; returns seconds in total and per part.

    ``total_s`` is the median of ``repeats`` calls after a first one, as in the long-lived web process that
    serves the results page; ``first_call_s`` is that first call, which also imports scipy (on first use).

    The default design (5 random pairs per prompt, 1 rater each out of 50: 20,000 prompts, nearly every
    (prompt, rater) cell its own) was the slowest of those tried (1 to 15 pairs per prompt, 1 to 3
    raters). With ``style``, outputs have lengths and markdown counts, and the length-controlled fit runs
    too. Simulating the votes is not timed.
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
        arm_length=np.linspace(200, 400, n_arms) if style else None,
        length_effect=0.5,
    )
    if style:
        simulated["left_markdown"] = rng.poisson(1.0, len(simulated["left"]))
        simulated["right_markdown"] = rng.poisson(1.0, len(simulated["left"]))
    simulated = {key: array[:n_votes] for key, array in simulated.items()}

    def timed() -> tuple[float, float, dict[str, Any]]:
        started, cpu = time.perf_counter(), time.process_time()
        summary = summarize(simulated, n_arms=n_arms, n_categories=n_categories, n_rounds=n_rounds, seed=seed)
        return time.perf_counter() - started, time.process_time() - cpu, summary

    first = timed()[0]
    runs = sorted((timed() for _ in range(repeats)), key=lambda run: run[0])
    total, cpu, summary = runs[len(runs) // 2]
    return {
        "n_votes": n_votes,
        "n_arms": n_arms,
        "n_categories": n_categories,
        "n_rounds": n_rounds,
        "style_control": style,
        "n_prompts": len(np.unique(simulated["prompt"])),
        "n_raters": len(np.unique(simulated["rater"])),
        "total_s": total,
        # CPU seconds of this process: the figure that holds when other work shares the machine's cores.
        "cpu_s": cpu,
        "first_call_s": first,
        "repeats": repeats,
        "parts_s": summary["timings_s"],
    }

"""The automatic depth router: predict an unlabelled prompt's task category from its text, then its depth.

The "auto" depth policy ({"kind": "auto", "mapping": {category: k}, "default": k, "router": {...}}) is the
seed's meta-router: a small classifier, fit on an experiment's labelled prompts, places a new prompt in a
category, and the category's k (the recommended mapping) is applied. A prompt it cannot place (no known
words, or no class probable enough) gets the stated default k, and the decision says so: nothing is silent.

Features are hashed word and punctuation unigrams and bigrams (sublinear counts, L2-normalised) plus the
prompt's length, so the classifier is a list of numbers that fits in the policy's JSON. The classifier is a
multinomial logistic regression with an L2 penalty. Pure Python for prediction; numpy and scipy only when
fitting.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .depth import DepthPolicy
    from .generate import Request

DEFAULT_DIM = 512
DEFAULT_MIN_CONFIDENCE = 0.5
DEFAULT_L2 = 1e-4
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")


def _hash(feature: str, dim: int) -> int:
    return zlib.crc32(feature.encode()) % dim  # stable across processes, unlike hash()


def text_features(text: str, dim: int = DEFAULT_DIM) -> dict[int, float]:
    """Sparse features of a text: hashed unigrams and bigrams (1 + log count), L2-normalised, and length.

    Numbers are one token class ("<num>"), so "9 plus 8" and "7 plus 5" look alike. The last index holds
    log(1 + tokens) / 10, which tells a long document from a one-line request.
    """
    words = ["<num>" if w.isdigit() else w for w in _TOKEN.findall(text.casefold())]
    counts = Counter(words) + Counter(f"{a} {b}" for a, b in itertools.pairwise(words))
    hashed: dict[int, float] = {}
    for feature, count in counts.items():
        index = _hash(feature, dim - 1)
        hashed[index] = hashed.get(index, 0.0) + 1.0 + math.log(count)
    norm = math.sqrt(sum(v * v for v in hashed.values()))
    features = {i: v / norm for i, v in hashed.items()} if norm else {}
    if words:
        features[dim - 1] = math.log1p(len(words)) / 10
    return features


def word_ids(text: str) -> list[int]:
    """Ids of a text's words (letters only, case-folded) in a space large enough to be told apart."""
    return [zlib.crc32(w.encode()) % 2**20 for w in re.findall(r"[^\W\d_]+", text.casefold())]


@dataclass(frozen=True)
class Placement:
    """Where the router puts a prompt: a category, or None (then the policy's default depth applies)."""

    category: str | None
    confidence: float
    reason: str


@dataclass(frozen=True)
class CategoryRouter:
    """A fitted classifier: weights[c] are class c's weights over the features, then its bias."""

    classes: tuple[str, ...]
    dim: int
    weights: tuple[tuple[float, ...], ...]
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    held_out_accuracy: float | None = None
    known: tuple[int, ...] = ()  # word_ids of the labelled prompts: a prompt sharing none is not guessed

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError("An auto router needs at least two categories")
        if len(self.weights) != len(self.classes) or any(len(w) != self.dim + 1 for w in self.weights):
            raise ValueError(f"An auto router needs {len(self.classes)} rows of {self.dim + 1} weights")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in [0, 1), got {self.min_confidence}")

    def probabilities(self, text: str) -> list[float] | None:
        features = text_features(text, self.dim)
        if not features:
            return None
        logits = [w[-1] + sum(w[i] * v for i, v in features.items()) for w in self.weights]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        return [e / total for e in exps]

    def place(self, text: str) -> Placement:
        if not any(character.isalnum() for character in text):
            return Placement(None, 0.0, "the prompt has no words to place it by")
        if self.known and not set(word_ids(text)) & set(self.known):
            return Placement(None, 0.0, "none of its words occur in the labelled prompts")
        probabilities = self.probabilities(text)
        if probabilities is None:
            return Placement(None, 0.0, "the prompt has no words to place it by")
        best = max(range(len(self.classes)), key=probabilities.__getitem__)
        confidence = probabilities[best]
        if confidence < self.min_confidence:
            return Placement(
                None,
                round(confidence, 4),
                f"no category is probable enough (best {self.classes[best]} at {confidence:.2f}, "
                f"below {self.min_confidence:.2f})",
            )
        return Placement(self.classes[best], round(confidence, 4), "predicted")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoryRouter:
        if not isinstance(data, Mapping):
            raise ValueError("An auto policy's router is a JSON object (made by recommend_policy --auto)")
        unknown = set(data) - {"classes", "dim", "weights", "min_confidence", "held_out_accuracy", "known"}
        if unknown:
            raise ValueError(f"Unknown router keys {sorted(unknown)}")
        try:
            return cls(
                classes=tuple(str(c) for c in data["classes"]),
                dim=int(data["dim"]),
                weights=tuple(tuple(float(x) for x in row) for row in data["weights"]),
                min_confidence=float(data.get("min_confidence", DEFAULT_MIN_CONFIDENCE)),
                held_out_accuracy=data.get("held_out_accuracy"),
                known=tuple(int(i) for i in data.get("known", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"An auto router needs classes, dim and weights ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "dim": self.dim,
            "weights": [[round(x, 5) for x in row] for row in self.weights],
            "min_confidence": self.min_confidence,
            "held_out_accuracy": self.held_out_accuracy,
            "known": list(self.known),
        }


@dataclass(frozen=True)
class AutoDecision:
    """The depth an auto policy chose for one prompt, and why (stored with the output)."""

    k: int
    category: str | None
    confidence: float
    fallback: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "category": self.category,
            "confidence": self.confidence,
            "fallback": self.fallback,
            "reason": self.reason,
        }


def decide(router: CategoryRouter, mapping: Mapping[str, int], default: int, text: str) -> AutoDecision:
    """Place the prompt and look its category's k up; the default otherwise, said so."""
    placement = router.place(text)
    if placement.category is None:
        reason = f"default k={default}: {placement.reason}"
        return AutoDecision(default, None, placement.confidence, True, reason)
    k = mapping.get(placement.category)
    if k is None:
        return AutoDecision(
            default,
            placement.category,
            placement.confidence,
            True,
            f"default k={default}: {placement.category} has no depth in the mapping",
        )
    return AutoDecision(k, placement.category, placement.confidence, False, f"predicted {placement.category}")


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class FitReport:
    """A router fit on every labelled prompt, and its accuracy on prompts held out of the fit."""

    router: CategoryRouter
    held_out_accuracy: float | None  # share of held-out prompts placed in their own category
    held_out_unplaced: int  # held-out prompts it could not place (counted as wrong above)
    held_out_n: int
    folds: int


def _matrix(texts: Sequence[str], dim: int) -> Any:
    import numpy as np

    x = np.zeros((len(texts), dim + 1))
    for row, text in enumerate(texts):
        for i, v in text_features(text, dim).items():
            x[row, i] = v
    x[:, dim] = 1.0  # the bias column
    return x


def _fit_weights(x: Any, y: Any, n_classes: int, l2: float) -> Any:
    """Multinomial logistic regression, L2 on the weights (not the bias), by L-BFGS: [classes, dim + 1]."""
    import numpy as np
    from scipy.optimize import minimize

    n, d = x.shape
    onehot = np.eye(n_classes)[y]
    penalty = np.ones(d)
    penalty[-1] = 0.0

    def loss(flat: Any) -> tuple[float, Any]:
        w = flat.reshape(n_classes, d)
        logits = x @ w.T
        logits -= logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        value = -(onehot * log_p).sum() / n + 0.5 * l2 * (w * w * penalty).sum()
        grad = (np.exp(log_p) - onehot).T @ x / n + l2 * w * penalty
        return value, grad.ravel()

    result = minimize(loss, np.zeros(n_classes * d), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return result.x.reshape(n_classes, d)


def _router(
    texts: Sequence[str], x: Any, y: Any, classes: tuple[str, ...], dim: int, l2: float, min_confidence: float
) -> CategoryRouter:
    w = _fit_weights(x, y, len(classes), l2)
    known = tuple(sorted({i for text in texts for i in word_ids(text)}))
    return CategoryRouter(
        classes, dim, tuple(tuple(map(float, row)) for row in w), min_confidence, None, known
    )


def fit_router(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    dim: int = DEFAULT_DIM,
    l2: float = DEFAULT_L2,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    folds: int = 5,
    seed: int = 0,
) -> FitReport:
    """Fit on every (text, label); estimate accuracy by stratified k-fold cross-validation over the prompts.

    Each prompt is held out once: a router fit on the other folds places it, and an unplaced prompt counts as
    wrong. Categories with fewer prompts than folds are spread as far as they go.
    """
    import numpy as np

    if len(texts) != len(labels):
        raise ValueError("texts and labels must have the same length")
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise ValueError("Fitting a router needs labelled prompts of at least two categories")
    y = np.array([classes.index(label) for label in labels])
    x = _matrix(texts, dim)
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=int)
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y == c))
        fold_of[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    correct = unplaced = held = 0
    used_folds = 0
    for fold in range(folds):
        test, train = fold_of == fold, fold_of != fold
        if not test.any() or len(set(y[train].tolist())) < len(classes):
            continue
        used_folds += 1
        train_texts = [texts[i] for i in np.flatnonzero(train)]
        router = _router(train_texts, x[train], y[train], classes, dim, l2, min_confidence)
        for index in np.flatnonzero(test):
            placement = router.place(texts[index])
            held += 1
            unplaced += placement.category is None
            correct += placement.category == labels[index]
    accuracy = round(correct / held, 4) if held else None
    full = replace(_router(texts, x, y, classes, dim, l2, min_confidence), held_out_accuracy=accuracy)
    return FitReport(full, accuracy, unplaced, held, used_folds)


def auto_requests(
    policy: DepthPolicy, requests: Sequence[Request]
) -> tuple[DepthPolicy, list[Request], list[AutoDecision]]:
    """An auto policy made runnable: the requests labelled with their predicted category (their own labels
    dropped), the by_category policy mapping those labels to k, and the decision per request.

    An unplaced prompt gets the empty label, hence the default k, and a decision that says why.
    """
    from .depth import DepthPolicy

    if policy.kind != "auto":
        raise ValueError(f"auto_requests takes an auto policy, got {policy.describe()}")
    mapping = dict(policy.mapping)
    decisions = [decide(policy.router, mapping, policy.default, request.prompt) for request in requests]
    labelled = [
        replace(request, category=decision.category if not decision.fallback else "", tags=())
        for request, decision in zip(requests, decisions, strict=True)
    ]
    return DepthPolicy.by_category(mapping, policy.default), labelled, decisions

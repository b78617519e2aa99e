"""Routing summaries of finished outputs added up per arm and category, for heatmaps and TensorBoard."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluator.models import Experiment, Generation


@dataclass(frozen=True)
class RoutingTotals:
    """Expert uses summed over outputs: ``counts`` [layers, experts], ``tokens`` routed per layer, the
    outputs they came from, and routing entropy summed over tokens and layers."""

    counts: np.ndarray
    tokens: int = 0
    outputs: int = 0
    entropy_sum: float = 0.0

    def __add__(self, other: RoutingTotals) -> RoutingTotals:
        return RoutingTotals(
            self.counts + other.counts,
            self.tokens + other.tokens,
            self.outputs + other.outputs,
            self.entropy_sum + other.entropy_sum,
        )

    @property
    def share(self) -> np.ndarray:
        """Per layer, the share of tokens routed to each expert (a row sums to the mean active experts)."""
        return self.counts / self.tokens if self.tokens else np.zeros_like(self.counts, dtype=float)

    @property
    def active_per_layer(self) -> list[float]:
        return (self.counts.sum(1) / self.tokens).round(4).tolist() if self.tokens else []

    @property
    def mean_active_experts(self) -> float:
        layers = self.counts.shape[0]
        return float(self.counts.sum() / (self.tokens * layers)) if self.tokens and layers else 0.0

    @property
    def mean_entropy(self) -> float:
        layers = self.counts.shape[0]
        return self.entropy_sum / (self.tokens * layers) if self.tokens and layers else 0.0


def routing_totals(*, experiment: Experiment) -> dict[tuple[int, int | None], RoutingTotals]:
    """Routing summed per (variant id, category id), and per (variant id, None) over all categories.

    An output whose counts have another shape than the first of its group (another checkpoint's layers
    or experts) is left out of that group rather than summed into nonsense.
    """
    rows = Generation.objects.filter(
        experiment=experiment, status=Generation.Status.DONE, routing__isnull=False
    ).values_list(
        "variant_id", "prompt__category_id", "routing__counts", "routing__tokens", "routing__mean_entropy"
    )
    totals: dict[tuple[int, int | None], RoutingTotals] = {}
    for variant_id, category_id, counts, tokens, mean_entropy in rows.iterator(chunk_size=200):
        counts = np.asarray(counts or [], dtype=np.int64)
        if counts.ndim != 2 or not counts.size:
            continue
        tokens = int(tokens or 0)
        one = RoutingTotals(counts, tokens, 1, float(mean_entropy or 0.0) * tokens * counts.shape[0])
        for key in ((variant_id, category_id), (variant_id, None)):
            previous = totals.get(key)
            if previous is None:
                totals[key] = one
            elif previous.counts.shape == counts.shape:
                totals[key] = previous + one
    return totals

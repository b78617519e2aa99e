"""CSV exports of the preference results, streamed row by row and safe to open in a spreadsheet."""

import csv
from collections.abc import Iterable, Iterator

from dashboard.models import Rating
from dashboard.selectors import iter_votes, rater_pseudonym
from evaluator.models import Experiment

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

VOTE_COLUMNS = [
    "experiment",
    "category",
    "prompt_id",
    "prompt",
    "seed",
    "left_arm",
    "left_depth",
    "left_context",
    "right_arm",
    "right_depth",
    "right_context",
    "verdict",
    "winner",
    "criteria",
    "comment",
    "rater",
    "seconds",
    "rated_at",
    "gold_check",
    "gold_correct",
    "too_fast",
    "comparison_flags",
]


def safe_cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula is prefixed with a quote and shown as text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def vote_rows(experiment: Experiment) -> Iterator[list[object]]:
    for r in iter_votes(experiment):
        c = r.comparison
        left, right = c.left.variant, c.right.variant
        winner = {Rating.Verdict.LEFT: left.name, Rating.Verdict.RIGHT: right.name}.get(r.verdict, "")
        yield [
            experiment.name,
            c.prompt.category.slug,
            c.prompt_id,
            c.prompt.text,
            c.seed,
            left.name,
            left.depth_policy.describe(),
            left.context_config.describe(),
            right.name,
            right.depth_policy.describe(),
            right.context_config.describe(),
            r.verdict,
            winner,
            ";".join(f"{name}={side}" for name, side in sorted(r.criteria.items())),
            r.comment,
            rater_pseudonym(r.rater_id),
            round(r.seconds, 3),
            r.created_at.isoformat(),
            int(c.is_gold),
            "" if r.gold_correct is None else int(r.gold_correct),
            int(r.too_fast),
            c.flag_count,
        ]


def csv_lines(header: list[str], rows: Iterable[list[object]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([safe_cell(v) for v in row])

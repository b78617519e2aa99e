"""CSV exports of the results: every vote, and the aggregates per category and arm.

Votes are read over a server-side cursor as plain tuples and written a chunk of rows at a time, so an
export of millions of votes runs in constant memory. Every cell a spreadsheet would run as a formula
is turned into text.
"""

import csv
import functools
import io
import json
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from itertools import islice

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, StreamingHttpResponse

from dashboard.analysis import (
    OVERALL,
    REASONS,
    Exclusions,
    experiment_arms,
    experiment_results,
    gold_failed_raters,
)
from dashboard.models import Rating
from dashboard.selectors import rater_pseudonym
from evaluator.models import Comparison, Experiment

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 2000

VOTE_COLUMNS = [
    "experiment",
    "category",
    "prompt_id",
    "prompt",
    "seed",
    "left_arm",  # the arm shown on the left (A)
    "left_depth",
    "left_context",
    "right_arm",  # the arm shown on the right (B)
    "right_depth",
    "right_context",
    "verdict",  # by side as shown: left, right, tie, both_bad
    "winner",  # the arm preferred; empty for ties, "both bad" and gold checks
    "criteria",
    "comment",
    "rater",
    "seconds",
    "rated_at",
    "gold_check",
    "gold_correct",
    "too_fast",
    "comparison_flags",
    "rater_failed_gold",
]

AGGREGATE_COLUMNS = [
    "experiment",
    "category",
    "arm",
    "depth",
    "context",
    "score",
    "ci_low",
    "ci_high",
    "rank_best",
    "rank_worst",
    "win_rate",
    "votes",
    "ties",
    "both_bad",
    "mean_active_experts_per_token",
    "tokens_per_s",
    "outputs",
    "votes_counted",
    "votes_excluded",
    "excluded",
]


def safe_cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula is prefixed with a quote and shown as text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def vote_rows(experiment: Experiment, *, chunk_size: int = ROWS_PER_CHUNK) -> Iterator[list[object]]:
    """One row per rating, comparison by comparison, each one's votes in the order given; text cells safe.

    Two server-side cursors walk the experiment's comparisons and its ratings side by side, both in
    comparison order, so a comparison's prompt (which can be a long document), arms and flags are read
    and formatted once, not once per vote, and memory stays constant.
    """
    arms = {
        arm.pk: [safe_cell(arm.name), safe_cell(arm.depth), safe_cell(arm.context)]
        for arm in experiment_arms(experiment)
    }
    failed = gold_failed_raters(experiment)
    name = safe_cell(experiment.name)
    pseudonyms: dict[int, str] = {}
    comparisons = (
        Comparison.objects.filter(experiment=experiment)
        .order_by("pk")
        .values_list(
            "pk",
            "prompt__category__slug",
            "prompt_id",
            "prompt__text",
            "seed",
            "left__variant_id",
            "right__variant_id",
            "gold_side",
            "flag_count",
        )
        .iterator(chunk_size=chunk_size)
    )
    ratings = (
        Rating.objects.filter(comparison__experiment=experiment)
        .order_by("comparison_id", "pk")
        # Both as text: parsing the JSON of every row ("{}" mostly) and building a datetime only to
        # print it again would cost more than the rest of the row.
        .annotate(criteria_text=Cast("criteria", TextField()), created_text=Cast("created_at", TextField()))
        .values_list(
            "comparison_id",
            "verdict",
            "criteria_text",
            "comment",
            "rater_id",
            "seconds",
            "created_text",
            "gold_correct",
            "too_fast",
        )
        .iterator(chunk_size=chunk_size)
    )
    current = None
    for (
        comparison_id,
        verdict,
        criteria,
        comment,
        rater_id,
        seconds,
        rated_at,
        gold_correct,
        too_fast,
    ) in ratings:
        if comparison_id != current:
            # Both walks are in comparison order: skip the comparisons nobody has voted on yet.
            row = next((c for c in comparisons if c[0] == comparison_id), None)
            if row is None:
                return  # the experiment's comparisons were deleted while it was being exported
            current, category, prompt_id, prompt, seed, left_id, right_id, gold_side, flags = row
            left, right = arms[left_id], arms[right_id]
            head = [name, safe_cell(category), prompt_id, safe_cell(prompt), seed, *left, *right]
            # A gold check tests the rater: the degraded copy is no arm's output, so nobody wins.
            winners = {} if gold_side else {"left": left[0], "right": right[0]}
            gold = 1 if gold_side else 0
        pseudonym = pseudonyms.get(rater_id)
        if pseudonym is None:
            pseudonym = pseudonyms[rater_id] = rater_pseudonym(rater_id)
        yield [
            *head,
            verdict,
            winners.get(verdict, ""),
            _criteria(criteria),
            safe_cell(comment),
            pseudonym,
            round(seconds, 3),
            _iso_utc(rated_at),
            gold,
            "" if gold_correct is None else int(gold_correct),
            int(too_fast),
            flags,
            int(rater_id in failed),
        ]


def _iso_utc(text: str) -> str:
    """A UTC timestamp as the database prints it ("2026-11-29 13:54:39.4298+00") in ISO 8601.

    Django keeps the connection in UTC; SQLite stores the UTC time without an offset.
    """
    text = text.replace(" ", "T", 1)
    return (text[:-3] if text.endswith("+00") else text) + "+00:00"


@functools.lru_cache(maxsize=1024)
def _criteria(text: str) -> str:
    """{"clarity": "left", …} as clarity=left;… (criterion names are fixed words, sides left/right/tie)."""
    if text == "{}":
        return ""
    return ";".join(f"{name}={side}" for name, side in sorted(json.loads(text).items()))


def aggregate_rows(experiment: Experiment, *, exclusions: Exclusions | None = None) -> Iterator[list[object]]:
    """One row per category (and "all") and arm: preference, certainty and cost; text cells made safe."""
    results = experiment_results(experiment, exclusions=exclusions)
    excluded = ";".join(reason for reason in REASONS if getattr(results.exclusions, reason))
    for group in results.groups:
        for row in group.rows:
            yield [
                safe_cell(experiment.name),
                "all" if group.key == OVERALL else safe_cell(group.key),
                safe_cell(row.arm.name),
                safe_cell(row.arm.depth),
                safe_cell(row.arm.context),
                _rounded(row.score, 1),
                _rounded(row.ci_low, 1),
                _rounded(row.ci_high, 1),
                row.rank_low,
                row.rank_high,
                _rounded(row.win_rate, 4),
                row.votes,
                row.ties,
                row.both_bad,
                _rounded(row.cost.mean_active_experts, 3),
                _rounded(row.cost.tokens_per_s, 2),
                row.cost.outputs,
                results.counts["kept"],
                results.counts["excluded"],
                excluded,
            ]


def _rounded(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(value, digits)


def csv_chunks(
    header: list[str], rows: Iterable[list[object]], *, rows_per_chunk: int = ROWS_PER_CHUNK
) -> Generator[str]:
    """CSV text, a chunk of rows at a time; the rows' text cells must be safe already (``safe_cell``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    rows = iter(rows)
    while batch := list(islice(rows, rows_per_chunk)):
        writer.writerows(batch)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()  # the header of an empty export


def votes_csv(experiment: Experiment) -> Generator[str]:
    return csv_chunks(VOTE_COLUMNS, vote_rows(experiment))


def aggregates_csv(experiment: Experiment, *, exclusions: Exclusions | None = None) -> Generator[str]:
    return csv_chunks(AGGREGATE_COLUMNS, aggregate_rows(experiment, exclusions=exclusions))


async def _async_chunks(chunks: Generator[str]) -> AsyncIterator[str]:
    # Thread-sensitive calls of one request share a thread, so the server-side cursor keeps its connection.
    fetch = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await fetch(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()


def csv_response(request: HttpRequest, chunks: Generator[str], filename: str) -> StreamingHttpResponse:
    """Stream CSV chunks to the client.

    Under ASGI (daphne) Django reads a synchronous iterator into a list before sending it, so there the
    chunks go through an asynchronous iterator instead; under WSGI (tests, the live test server) the
    synchronous one streams as it is.
    """
    content = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response

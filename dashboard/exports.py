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


def csv_field(value: object) -> str:
    """One cell as the csv module writes it (minimal quoting, "\r\n" rows); text must be safe already."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if any(c in text for c in _QUOTE_TRIGGERS):
        return '"' + text.replace('"', '""') + '"'
    return text


_QUOTE_TRIGGERS = (",", '"', "\r", "\n")


def vote_lines(experiment: Experiment, *, chunk_size: int = ROWS_PER_CHUNK) -> Iterator[str]:
    """One CSV line per rating, comparison by comparison, each one's votes in the order given; cells safe.

    Two server-side cursors walk the experiment's comparisons and its ratings side by side, both in
    comparison order, so a comparison's cells (its prompt can be a long document) are made safe, quoted
    and joined once, not once per vote, and memory stays constant. A vote's own cells are words, numbers
    and the comment, so the line is put together directly; ``csv_field`` quotes as the csv module does.
    """
    arms = {
        arm.pk: (
            safe_cell(arm.name),
            ",".join(csv_field(safe_cell(cell)) for cell in (arm.name, arm.depth, arm.context)),
        )
        for arm in experiment_arms(experiment)
    }
    failed = gold_failed_raters(experiment)
    name = csv_field(safe_cell(experiment.name))
    raters: dict[int, str] = {}
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
    gold_cells = {None: "", True: "1", False: "0"}
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
            (left_name, left), (right_name, right) = arms[left_id], arms[right_id]
            head = (
                f"{name},{csv_field(safe_cell(category))},{prompt_id},{csv_field(safe_cell(prompt))},"
                f"{seed},{left},{right},"
            )
            # A gold check tests the rater: the degraded copy is no arm's output, so nobody wins.
            winners = {} if gold_side else {"left": csv_field(left_name), "right": csv_field(right_name)}
            gold = "1" if gold_side else "0"
            tail = f",{flags},"
        rater = raters.get(rater_id)
        if rater is None:
            rater = raters[rater_id] = (rater_pseudonym(rater_id), "1" if rater_id in failed else "0")
        yield (
            f"{head}{verdict},{winners.get(verdict, '')},{_criteria(criteria)},"
            f"{csv_field(safe_cell(comment)) if comment else ''},{rater[0]},{round(seconds, 3)},"
            f"{_iso_utc(rated_at)},{gold},{gold_cells[gold_correct]},{'1' if too_fast else '0'}"
            f"{tail}{rater[1]}\r\n"
        )


def _iso_utc(text: str) -> str:
    """A UTC timestamp as the database prints it ("2026-11-29 13:54:39.4298+00") in ISO 8601.

    Django keeps the connection in UTC; SQLite stores the UTC time without an offset.
    """
    text = text.replace(" ", "T", 1)
    return (text[:-3] if text.endswith("+00") else text) + "+00:00"


@functools.lru_cache(maxsize=1024)
def _criteria(text: str) -> str:
    """{"clarity": "left", …} as the cell clarity=left;… (names are fixed words, sides left/right/tie)."""
    if text == "{}":
        return ""
    return csv_field(";".join(f"{name}={side}" for name, side in sorted(json.loads(text).items())))


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


def votes_csv(experiment: Experiment, *, rows_per_chunk: int = ROWS_PER_CHUNK) -> Generator[str]:
    lines = vote_lines(experiment, chunk_size=rows_per_chunk)
    yield ",".join(VOTE_COLUMNS) + "\r\n"
    while batch := list(islice(lines, rows_per_chunk)):
        yield "".join(batch)


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

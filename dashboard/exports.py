"""Exports of the results: every vote and the aggregates per category and arm (CSV), every output (JSONL,
Parquet) and the scores as the votes came in (CSV).

Votes are read over a server-side cursor as plain tuples and written a chunk of rows at a time, so an
export of millions of votes runs in constant memory. Every cell a spreadsheet would run as a formula
is turned into text.
"""

import csv
import functools
import io
import json
import math
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, StreamingHttpResponse

from dashboard import stats
from dashboard.analysis import (
    OVERALL,
    REASONS,
    ArmRow,
    Exclusions,
    Group,
    experiment_arms,
    experiment_categories,
    experiment_results,
    experiment_votes,
    gold_failed_raters,
    output_styles,
)
from dashboard.models import Rating
from dashboard.selectors import rater_pseudonym
from evaluator.engine.depth import DepthPolicy
from evaluator.models import Comparison, Experiment, Generation, Variant

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 2000

# Per side: the arm's labels, then its output and the numbers behind the labels: k the policy chose for
# this output (empty for dynamic depth), the most experts it may use, the context kind, the YaRN factor
# (1 for native) and the window in tokens (native context × factor; empty when the checkpoint is unread).
SIDE_COLUMNS = [
    "arm",
    "depth",
    "context",
    "output_id",
    "k",
    "k_max",
    "context_kind",
    "yarn_factor",
    "window",
    "new_tokens",  # the output's length, and its markdown elements: what style control adjusts for
    "markdown_elements",
]
VOTE_COLUMNS = [
    "experiment",
    "category",
    "prompt_id",
    "prompt",
    "seed",
    "comparison_id",
    "is_identical",
    *(f"left_{name}" for name in SIDE_COLUMNS),  # the arm shown on the left (A)
    *(f"right_{name}" for name in SIDE_COLUMNS),  # the arm shown on the right (B)
    "verdict",  # by side as shown: left, right, tie, both_bad; "identical" (no rater) when both texts match
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
    "flag_decision",  # a researcher's decision on a flagged comparison: exclude, keep, fix_prompt
    "rater_failed_gold",
]
TEXT_COLUMNS = ["left_text", "right_text"]  # the texts as shown (a gold check's degraded copy on its side)

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
    "compute_experts_per_token",  # expert slots computed: the cost (dynamic depth drops some)
    "tokens_per_s",
    "outputs",
    "excluded",
    "lc_score",  # length-controlled (style control): score and 95% interval
    "lc_ci_low",
    "lc_ci_high",
    "identical_outputs",  # this arm's comparisons in the category whose two outputs were the same text
    "comparisons",  # this arm's ready comparisons in the category, identical or not
    "identical_as_ties",  # 1 when identical outputs counted as ties in the scores
    "verdict",  # the group's verdict: the preferred arm, empty when none
    "leader",
    "runner_up",
    "difference",  # leader − runner-up, score points, with its 95% interval
    "difference_low",
    "difference_high",
    "p_adjusted",  # anytime-valid, Holm-adjusted across the experiment's groups
    "votes_needed",  # for an 80% chance of a verdict if the leader is truly planned_difference ahead or more
    "planned_difference",
    "raters_needed",  # new raters those votes come from, at the current votes per rater
    "lc_verdict",  # the verdict under length control
    "length_effect_points",  # points for an answer twice as long as the other, with its 95% interval
    "length_effect_low",
    "length_effect_high",
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


def vote_lines(
    experiment: Experiment, *, chunk_size: int = ROWS_PER_CHUNK, texts: bool = False
) -> Iterator[str]:
    """One CSV line per rating, comparison by comparison, each one's votes in the order given; cells safe.

    Two server-side cursors walk the experiment's comparisons and its ratings side by side, both in
    comparison order, so a comparison's cells (its prompt can be a long document) are made safe, quoted
    and joined once, not once per vote, and memory stays constant. A vote's own cells are words, numbers
    and the comment, so the line is put together directly; ``csv_field`` quotes as the csv module does.
    ``texts`` adds the two outputs as shown.
    """
    arms = _side_cells(experiment)
    failed = gold_failed_raters(experiment)
    name = csv_field(safe_cell(experiment.name))
    raters: dict[int, str] = {}
    text_fields = ["left__text", "right__text", "gold_text"] if texts else []
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
            "is_identical",
            "left_id",
            "right_id",
            "left__depth_k",
            "right__depth_k",
            "flag_decision",
            *text_fields,
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
    styles = output_styles(experiment)

    def comparison_cells(row) -> tuple[str, dict[str, str], str, str, str]:
        """What every line of one comparison shares: its head, the winner by verdict, and its tail."""
        comparison_id, category, prompt_id, prompt, seed, left_arm, right_arm, gold_side, flags = row[:9]
        identical, left_id, right_id, left_k, right_k, decision = row[9:15]
        (left_name, left_head, left_tail), (right_name, right_head, right_tail) = (
            arms[left_arm],
            arms[right_arm],
        )
        (left_tokens, left_marks), (right_tokens, right_marks) = (
            styles.get(left_id, (None, None)),
            styles.get(right_id, (None, None)),
        )
        head = (
            f"{name},{csv_field(safe_cell(category))},{prompt_id},{csv_field(safe_cell(prompt))},"
            f"{seed},{comparison_id},{'1' if identical else '0'},"
            f"{left_head},{left_id},{_cell(left_k)},{left_tail},{_cell(left_tokens)},{_cell(left_marks)},"
            f"{right_head},{right_id},{_cell(right_k)},{right_tail},{_cell(right_tokens)},{_cell(right_marks)},"
        )
        # A gold check tests the rater: the degraded copy is no arm's output, so nobody wins.
        winners = {} if gold_side else {"left": csv_field(left_name), "right": csv_field(right_name)}
        gold = "1" if gold_side else "0"
        tail = f",{flags},{decision},"
        end = "\r\n"
        if texts:
            left_text, right_text, gold_text = row[15:]
            shown = (
                gold_text if gold_side == "left" else left_text,
                gold_text if gold_side == "right" else right_text,
            )
            end = "".join(f",{csv_field(safe_cell(text))}" for text in shown) + "\r\n"
        return head, winners, gold, tail, end

    def identical_line(row) -> str:
        """A comparison whose two outputs are the same text: never shown, counted as its own outcome."""
        head, _, gold, tail, end = comparison_cells(row)
        return f"{head}identical,,,,,,,{gold},,0{tail}{end}"

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
            # Both walks are in comparison order: comparisons nobody voted on are passed by, but for
            # those whose outputs are identical, which get a line of their own.
            for row in comparisons:
                if row[0] == comparison_id:
                    break
                if row[9]:
                    yield identical_line(row)
            else:
                return  # the experiment's comparisons were deleted while it was being exported
            current = comparison_id
            head, winners, gold, tail, end = comparison_cells(row)
        rater = raters.get(rater_id)
        if rater is None:
            rater = raters[rater_id] = (rater_pseudonym(rater_id), "1" if rater_id in failed else "0")
        yield (
            f"{head}{verdict},{winners.get(verdict, '')},{_criteria(criteria)},"
            f"{csv_field(safe_cell(comment)) if comment else ''},{rater[0]},{round(seconds, 3)},"
            f"{_iso_utc(rated_at)},{gold},{gold_cells[gold_correct]},{'1' if too_fast else '0'}"
            f"{tail}{rater[1]}{end}"
        )
    for row in comparisons:
        if row[9]:
            yield identical_line(row)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _side_cells(experiment: Experiment) -> dict[int, tuple[str, str, str]]:
    """Per arm id: its name as a winner cell, its label cells (name, depth, context), and its number
    cells (k_max, context kind, YaRN factor, window), each part joined and safe."""
    arms = experiment_arms(experiment)
    variants = Variant.objects.select_related("checkpoint").in_bulk([arm.pk for arm in arms])
    cells = {}
    for arm in arms:
        variant = variants[arm.pk]
        policy, context = variant.depth_policy, variant.context_config
        native = variant.checkpoint.native_context
        numbers = (
            depth_k_max(policy),
            context.kind,
            f"{context.factor:g}",
            round(native * context.factor) if native else None,
        )
        cells[arm.pk] = (
            safe_cell(arm.name),
            ",".join(csv_field(safe_cell(cell)) for cell in (arm.name, arm.depth, arm.context)),
            ",".join(csv_field(safe_cell(_cell(cell))) for cell in numbers),
        )
    return cells


def depth_k_max(policy: DepthPolicy) -> int | None:
    """The most experts per token a depth policy may route to: k, the largest k of a map, or k_max."""
    if policy.kind == "fixed":
        return policy.k
    if policy.kind == "dynamic":
        return policy.k_max
    return max([policy.default, *(k for _, k in policy.mapping)])


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
                _rounded(row.cost.compute_experts, 3),
                _rounded(row.cost.tokens_per_s, 2),
                row.cost.outputs,
                excluded,
                *_length_controlled(row),
                *_identical(group, row.arm.index),
                1 if results.exclusions.identical_as_ties else 0,
                *_verdict_cells(group),
            ]


def _length_controlled(row: ArmRow) -> list[object]:
    return [_rounded(row.lc_score, 1), _rounded(row.lc_ci_low, 1), _rounded(row.lc_ci_high, 1)]


def _identical(group: Group, arm_index: int) -> list[int]:
    pairs = [p for p in group.identical if arm_index in (p.first.index, p.second.index)]
    return [sum(p.identical for p in pairs), sum(p.comparisons for p in pairs)]


def _verdict_cells(group: Group) -> list[object]:
    verdict, effect = group.verdict, group.length_effect or {}
    controlled = (group.length_controlled or {}).get("verdict", {})
    return [
        safe_cell(verdict.get("winner") or ""),
        safe_cell(verdict.get("leader") or ""),
        safe_cell(verdict.get("runner_up") or ""),
        _rounded(verdict.get("difference"), 1),
        _rounded(verdict.get("difference_low"), 1),
        _rounded(verdict.get("difference_high"), 1),
        _rounded(verdict.get("p_adjusted"), 6),
        "" if verdict.get("votes_needed") is None else verdict["votes_needed"],
        _rounded(verdict.get("planned_difference"), 1),
        "" if verdict.get("raters_needed") is None else verdict["raters_needed"],
        safe_cell(controlled.get("winner") or ""),
        _rounded(effect.get("points"), 1),
        _rounded(effect.get("points_low"), 1),
        _rounded(effect.get("points_high"), 1),
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


def votes_csv(
    experiment: Experiment, *, rows_per_chunk: int = ROWS_PER_CHUNK, texts: bool = False
) -> Generator[str]:
    """Every vote; ``texts`` adds the two outputs as shown (TEXT_COLUMNS)."""
    lines = vote_lines(experiment, chunk_size=rows_per_chunk, texts=texts)
    yield ",".join([*VOTE_COLUMNS, *(TEXT_COLUMNS if texts else [])]) + "\r\n"
    while batch := list(islice(lines, rows_per_chunk)):
        yield "".join(batch)


def with_bom(chunks: Iterable[str]) -> Generator[str]:
    """The chunks behind a UTF-8 byte order mark, which spreadsheet programs need to read UTF-8 ("×")."""
    yield "\ufeff"
    yield from chunks


def aggregates_csv(experiment: Experiment, *, exclusions: Exclusions | None = None) -> Generator[str]:
    return csv_chunks(AGGREGATE_COLUMNS, aggregate_rows(experiment, exclusions=exclusions))


# --------------------------------------------------------------------------- outputs


class ExportError(Exception):
    """An export that cannot be written as asked, with the reason."""


def output_records(experiment: Experiment, *, chunk_size: int = 500) -> Iterator[dict[str, Any]]:
    """Every output of the experiment, arm by arm and prompt by prompt: its arm, prompt, category, seed,
    text, cost and routing summary (as the engine recorded it)."""
    arms = {arm.pk: arm for arm in experiment_arms(experiment)}
    variants = Variant.objects.in_bulk(list(arms))
    rows = (
        Generation.objects.filter(experiment=experiment)
        .order_by("variant_id", "prompt_id", "seed")
        .values(
            "pk",
            "variant_id",
            "prompt_id",
            "prompt__external_id",
            "prompt__category__slug",
            "prompt__text",
            "seed",
            "status",
            "text",
            "error",
            "prompt_tokens",
            "new_tokens",
            "seconds",
            "tokens_per_s",
            "depth_k",
            "mean_active_experts",
            "compute_experts",
            "routing",
            "finished_at",
        )
        .iterator(chunk_size=chunk_size)
    )
    for row in rows:
        arm, variant = arms[row["variant_id"]], variants[row["variant_id"]]
        yield {
            "output_id": row["pk"],
            "experiment_id": experiment.pk,
            "experiment": experiment.name,
            "arm_id": arm.pk,
            "arm": arm.name,
            "depth": arm.depth,
            "depth_policy": variant.depth,
            "context": arm.context,
            "context_config": variant.context_config.to_dict(),
            "category": row["prompt__category__slug"],
            "prompt_id": row["prompt_id"],
            "prompt_external_id": row["prompt__external_id"],
            "prompt": row["prompt__text"],
            "seed": row["seed"],
            "status": row["status"],
            "text": row["text"],
            "error": row["error"],
            "prompt_tokens": row["prompt_tokens"],
            "new_tokens": row["new_tokens"],
            "seconds": row["seconds"],
            "tokens_per_s": row["tokens_per_s"],
            "depth_k": row["depth_k"],
            "mean_active_experts": row["mean_active_experts"],
            "compute_experts": row["compute_experts"],
            "routing": row["routing"],
            "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        }


def outputs_jsonl(experiment: Experiment, *, rows_per_chunk: int = 200) -> Generator[str]:
    """Every output as one JSON object per line (output_records), a chunk of lines at a time."""
    records = output_records(experiment)
    while batch := list(islice(records, rows_per_chunk)):
        yield "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in batch)


# Nested values as JSON text in Parquet: one flat schema whatever the policies and routing hold.
PARQUET_JSON_FIELDS = ("depth_policy", "context_config", "routing")


def write_outputs_parquet(experiment: Experiment, path: str) -> int:
    """Every output (output_records) into a Parquet file; returns the rows written. Needs pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError(
            "Parquet needs the pyarrow package, which is not installed: pip install pyarrow, "
            "or export --format jsonl."
        ) from exc
    records = [
        {key: json.dumps(value) if key in PARQUET_JSON_FIELDS else value for key, value in record.items()}
        for record in output_records(experiment)
    ]
    pq.write_table(pa.Table.from_pylist(records), path)
    return len(records)


# --------------------------------------------------------------------------- scores over time

TIMELINE_STEPS = 10
TIMELINE_COLUMNS = [
    "votes_so_far",  # counted preference votes up to this point, in the order they came in
    "share_of_votes",
    "last_vote_at",
    "category",
    "arm",
    "arm_votes",
    # Bradley-Terry with ties on the votes so far, without bootstrap (no interval): cheap enough to
    # fit at every step; the results page and the aggregates export carry the intervals.
    "score_point_estimate_no_bootstrap",
]


def timeline_rows(
    experiment: Experiment, *, exclusions: Exclusions | None = None, steps: int = TIMELINE_STEPS
) -> Iterator[list[object]]:
    """Each arm's score, overall and per category, fitted on the first 1/steps, 2/steps, … of the counted
    votes, so that one sees when the ranking settled."""
    exclusions = exclusions or Exclusions()
    arms = experiment_arms(experiment)
    categories = experiment_categories(experiment)
    votes = experiment_votes(experiment, arms, categories).arrays
    keep, _ = stats.apply_exclusions(
        votes["gold_failed"], votes["too_fast"], votes["flagged"], **exclusions.as_kwargs()
    )
    kept = {name: votes[name][keep] for name in ("left", "right", "outcome", "category")}
    # The same votes in the same order (experiment_votes reads them by id): when each came in.
    times = list(
        Rating.objects.filter(comparison__experiment=experiment, comparison__gold_side="")
        .order_by("pk")
        .values_list("created_at", flat=True)
    )
    times = [t for t, k in zip(times, keep, strict=True) if k] if len(times) == len(keep) else []
    total = len(kept["left"])
    if total == 0 or len(arms) < 2:
        return
    groups = [("all", None)] + [(c.slug, i) for i, c in enumerate(categories)]
    for n in sorted({math.ceil(total * step / steps) for step in range(1, steps + 1)}):
        first = {name: values[:n] for name, values in kept.items()}
        last = times[n - 1].isoformat() if times else ""
        for slug, index in groups:
            mask = np.ones(n, bool) if index is None else first["category"] == index
            left, right = first["left"][mask], first["right"][mask]
            played = np.bincount(left, minlength=len(arms)) + np.bincount(right, minlength=len(arms))
            scores = (
                stats.bradley_terry(left, right, first["outcome"][mask], len(arms)).scores
                if mask.any()
                else np.full(len(arms), np.nan)
            )
            for arm in arms:
                score = float(scores[arm.index])
                yield [
                    n,
                    round(n / total, 4),
                    last,
                    safe_cell(slug),
                    safe_cell(arm.name),
                    int(played[arm.index]),
                    "" if math.isnan(score) else round(score, 1),
                ]


def timeline_csv(
    experiment: Experiment, *, exclusions: Exclusions | None = None, steps: int = TIMELINE_STEPS
) -> Generator[str]:
    return csv_chunks(TIMELINE_COLUMNS, timeline_rows(experiment, exclusions=exclusions, steps=steps))


# --------------------------------------------------------------------------- responses


async def _async_chunks(chunks: Generator[str]) -> AsyncIterator[str]:
    # Thread-sensitive calls of one request share a thread, so the server-side cursor keeps its connection.
    fetch = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await fetch(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()


def csv_response(request: HttpRequest, chunks: Generator[str], filename: str) -> StreamingHttpResponse:
    return download_response(request, chunks, filename, content_type="text/csv; charset=utf-8")


def download_response(
    request: HttpRequest, chunks: Generator[str], filename: str, *, content_type: str
) -> StreamingHttpResponse:
    """Stream text chunks to the client as a file to save.

    Under ASGI Django reads a synchronous iterator into a list before sending it, so there the
    chunks go through an asynchronous iterator instead; under WSGI (tests, the live test server) the
    synchronous one streams as it is.
    """
    content = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response

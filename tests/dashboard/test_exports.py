"""The CSV exports and the commands around them: what a researcher downloads, writes to a file or times."""

import csv
import io
import json
from datetime import datetime

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.test import AsyncClient
from django.urls import reverse

from dashboard.analysis import experiment_results
from dashboard.exports import (
    AGGREGATE_COLUMNS,
    SIDE_COLUMNS,
    TIMELINE_COLUMNS,
    VOTE_COLUMNS,
    csv_chunks,
    csv_field,
    safe_cell,
)
from dashboard.models import Rating
from evaluator.models import Checkpoint, Comparison, Experiment, Generation, Variant
from tests.dashboard.results_data import bulk_votes, experiment_with_outputs, make_raters, rate_everything
from tests.dashboard.study_data import study, vote_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tiny_model_path):
    return experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=2, gold_rate=0.5)


@pytest.fixture
def rated(experiment, rater, second_rater):
    rate_everything(rater, prefer="k=4")
    rate_everything(second_rater, prefer="k=1", gold_right=False)
    Rating.objects.filter(rater=rater).update(comment="=HYPERLINK(1)")
    return experiment


def download(client, name: str, experiment: Experiment, query: str = "") -> list[dict]:
    response = client.get(reverse(name, args=[experiment.pk]) + (f"?{query}" if query else ""))
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize("name", ["export_votes", "export_aggregates"])
def test_exports_are_closed_to_raters_and_strangers(client, rater, stranger, experiment, name):
    for user in (rater, stranger):
        client.force_login(user)
        assert client.get(reverse(name, args=[experiment.pk])).status_code == 403


def test_the_votes_csv_has_every_vote_with_both_arms_and_all_flags(client, viewer, rated, rater):
    client.force_login(viewer)
    rows = download(client, "export_votes", rated)
    assert list(rows[0]) == VOTE_COLUMNS
    assert len(rows) == Rating.objects.count()
    gold = [r for r in rows if r["gold_check"] == "1"]
    preference = [r for r in rows if r["gold_check"] == "0"]
    assert gold and preference
    assert {r["category"] for r in rows} == {"routine", "philosophy"}
    for r in preference:
        assert r["left_arm"] != r["right_arm"]
        assert r["left_depth"] == f"fixed {r['left_arm']}" and r["left_context"] == "native context"
        assert r["winner"] == {"left": r["left_arm"], "right": r["right_arm"]}[r["verdict"]]
        assert r["prompt"] and int(r["prompt_id"]) > 0
    assert all(r["winner"] == "" and r["gold_correct"] in ("0", "1") for r in gold)
    # The careless rater failed the gold checks: every one of their rows says so.
    failed = {r["rater"] for r in rows if r["rater_failed_gold"] == "1"}
    assert len(failed) == 1 and all(r["gold_correct"] == "0" for r in gold if r["rater"] in failed)
    for r in rows:
        assert r["rater"].startswith("rater-") and r["rater"] not in ("bob", "carol")
        assert r["too_fast"] in ("0", "1") and r["comparison_flags"] == "0"
    assert {r["comment"] for r in rows} == {"'=HYPERLINK(1)", ""}
    rated_at = sorted(datetime.fromisoformat(r["rated_at"]) for r in rows)
    assert rated_at == sorted(Rating.objects.values_list("created_at", flat=True))


def test_the_votes_csv_shows_which_arm_was_on_the_left(client, viewer, rated):
    client.force_login(viewer)
    rows = download(client, "export_votes", rated)
    shown = {
        (c.prompt_id, c.left.variant.name, c.right.variant.name)
        for c in Comparison.objects.filter(experiment=rated, gold_side="").select_related("left__variant")
    }
    exported = {(int(r["prompt_id"]), r["left_arm"], r["right_arm"]) for r in rows if r["gold_check"] == "0"}
    assert exported <= shown


def test_comparisons_without_votes_are_skipped_and_each_vote_keeps_its_own_prompt(client, viewer, experiment):
    ready = list(Comparison.objects.ready().filter(experiment=experiment, gold_side="").order_by("pk"))
    voted = [ready[1], ready[-1]]
    raters = make_raters(2)
    for comparison in voted:
        for rater in raters:
            Rating.objects.create(comparison=comparison, rater=rater, verdict="tie", seconds=9.0)
    client.force_login(viewer)
    rows = download(client, "export_votes", experiment)
    assert [int(r["prompt_id"]) for r in rows] == [c.prompt_id for c in voted for _ in raters]
    assert [r["prompt"] for r in rows] == [c.prompt.text for c in voted for _ in raters]
    assert all(r["winner"] == "" for r in rows)  # a tie names no winner


def test_the_aggregates_csv_has_each_category_and_arm_with_the_pages_numbers(client, viewer, experiment):
    bulk_votes(experiment, make_raters(10), prefer="k=4", share=0.8)
    client.force_login(viewer)
    rows = download(client, "export_aggregates", experiment)
    assert list(rows[0]) == AGGREGATE_COLUMNS
    assert [(r["category"], r["arm"]) for r in rows] == [
        (c, a) for c in ("all", "philosophy", "routine") for a in ("k=1", "k=4")
    ]
    results = experiment_results(experiment)
    for r, expected in zip(rows, [row for g in results.groups for row in g.rows], strict=True):
        assert float(r["score"]) == pytest.approx(expected.score, abs=0.05)
        assert float(r["ci_low"]) <= float(r["score"]) <= float(r["ci_high"])
        assert float(r["win_rate"]) == pytest.approx(expected.win_rate, abs=1e-4)
        assert int(r["votes"]) == expected.votes and int(r["ties"]) == expected.ties
        assert float(r["tokens_per_s"]) > 0
        assert float(r["mean_active_experts_per_token"]) == pytest.approx(float(r["arm"][2:]), abs=0.01)
        assert r["excluded"] == "gold_failed;flagged"
    deep = [r for r in rows if r["arm"] == "k=4"]
    assert all(float(r["win_rate"]) > 0.5 and r["rank_best"] == "1" for r in deep)


def test_the_aggregates_follow_the_chosen_exclusions(client, viewer, experiment):
    raters = make_raters(2)
    bulk_votes(experiment, raters[:1], prefer="k=1", too_fast=True)
    bulk_votes(experiment, raters[1:], prefer="k=4")
    client.force_login(viewer)
    everything = download(client, "export_aggregates", experiment)
    careful = download(client, "export_aggregates", experiment, "exclusions=chosen&exclude=too_fast")
    assert everything[1]["win_rate"] == "0.5" and careful[1]["win_rate"] == "1.0"
    assert careful[0]["excluded"] == "too_fast"
    assert int(careful[0]["votes"]) == int(everything[0]["votes"]) // 2
    assert "votes_counted" not in careful[0]  # no total repeated on every row


@pytest.mark.django_db(transaction=True)
def test_under_asgi_the_csv_streams_through_an_async_iterator(viewer, rated):
    client = AsyncClient()
    client.force_login(viewer)  # the view runs in another thread: the data must be committed
    response = async_to_sync(client.get)(reverse("export_votes", args=[rated.pk]))
    assert response.status_code == 200
    assert response.is_async  # Django would otherwise read the whole export into a list first

    async def body() -> bytes:
        return b"".join([chunk async for chunk in response])

    rows = list(csv.DictReader(io.StringIO(async_to_sync(body)().decode())))
    assert len(rows) == Rating.objects.count()


def test_awkward_text_in_votes_and_arm_names_comes_back_cell_for_cell(client, viewer, rated, rater):
    comment = 'line one, "quoted"\r\nline two\n=2+2'
    Rating.objects.filter(rater=rater).update(comment=comment)
    arm = rated.variants.get(name="k=4")
    arm.name = '=k, "four"'
    arm.save()
    client.force_login(viewer)
    rows = download(client, "export_votes", rated)
    assert {r["comment"] for r in rows} == {comment, ""}
    assert {r["left_arm"] for r in rows} | {r["right_arm"] for r in rows} == {"k=1", "'" + arm.name}
    assert "'" + arm.name in {r["winner"] for r in rows}


@pytest.mark.parametrize(
    "value", ["", "plain", "a,b", 'say "hi"', "two\nlines", "cr\rhere", " padded ", "'=1", 3, -1.25, None]
)
def test_csv_field_quotes_exactly_as_the_csv_module_does(value):
    buffer = io.StringIO()
    csv.writer(buffer).writerow(["x", value])
    assert buffer.getvalue() == f"x,{csv_field(value)}\r\n"


def test_csv_is_written_in_chunks_of_rows():
    chunks = list(csv_chunks(["n"], ([i] for i in range(5)), rows_per_chunk=2))
    assert chunks == ["n\r\n0\r\n1\r\n", "2\r\n3\r\n", "4\r\n"]


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_cells_that_a_spreadsheet_would_run_are_made_text(value):
    assert safe_cell(value) == "'" + value


def test_plain_cells_are_left_alone():
    assert safe_cell("depth 8") == "depth 8"
    assert safe_cell(3) == 3
    assert safe_cell(-1.5) == -1.5


# --------------------------------------------------------------------------- commands


def test_the_export_command_writes_votes_by_experiment_name_or_id(rated, tmp_path):
    out = io.StringIO()
    call_command("export_results", rated.name, stdout=out)
    by_name = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(by_name) == Rating.objects.count()
    target = tmp_path / "votes.csv"
    call_command("export_results", str(rated.pk), "--out", str(target), stderr=io.StringIO())
    assert target.read_bytes().decode("utf-8") == out.getvalue()


def test_the_export_command_writes_aggregates(rated, tmp_path):
    target = tmp_path / "aggregates.csv"
    call_command(
        "export_results", str(rated.pk), "--kind", "aggregates", "--out", str(target), stderr=io.StringIO()
    )
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert {r["category"] for r in rows} == {"all", "routine", "philosophy"}


def test_the_export_command_says_which_experiments_exist(rated):
    with pytest.raises(CommandError, match=r"No experiment has the id or name 'nope'.*'results'"):
        call_command("export_results", "nope")


def test_the_export_command_refuses_an_unknown_kind(rated):
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("export_results", rated.name, "--kind", "everything")


def test_the_export_command_reports_a_file_it_cannot_write(rated, tmp_path):
    with pytest.raises(CommandError, match="Cannot write"):
        call_command("export_results", rated.name, "--out", str(tmp_path / "missing" / "votes.csv"))


def test_bench_stats_prints_its_timings_as_json():
    out = io.StringIO()
    call_command("bench_stats", "--votes", "2000", "--rounds", "50", stdout=out)
    report = json.loads(out.getvalue())
    assert report["n_votes"] == 2000 and report["total_s"] > 0
    assert set(report["parts_s"]) >= {"fit", "resample", "bootstrap_fits"}


def test_bench_export_times_the_votes_csv_and_leaves_nothing_behind():
    experiments, ratings = Experiment.objects.count(), Rating.objects.count()
    out = io.StringIO()
    call_command("bench_export", "--votes", "3000", stdout=out)
    report = json.loads(out.getvalue())
    assert report["rows"] == 3000 and report["rows_per_s"] > 0
    assert report["rss_peak_mb"] >= report["rss_before_mb"] > 0
    assert (Experiment.objects.count(), Rating.objects.count()) == (experiments, ratings)


# --------------------------------------------------------------------------- the researcher's exports


@pytest.fixture
def study_votes(tiny_model_path, rater, second_rater):
    """A study whose k=1 arm is dynamic and whose k=4 arm runs YaRN ×4; both raters prefer k=4 mostly."""
    experiment = study(tiny_model_path, name="exports")
    Variant.objects.filter(name="k=1").update(depth={"kind": "dynamic", "p": 0.9, "k_min": 1, "k_max": 8})
    Variant.objects.filter(name="k=4").update(context={"kind": "yarn", "factor": 4.0})
    Generation.objects.filter(experiment=experiment, variant__name="k=1").update(depth_k=None)
    for i, comparison in enumerate(Comparison.objects.ready().filter(experiment=experiment).order_by("pk")):
        vote_for(rater, comparison, "k=4")
        vote_for(second_rater, comparison, "k=1" if i == 0 else "k=4")
    return experiment


def raw_download(client, name: str, experiment: Experiment, query: str = "") -> tuple[object, bytes]:
    response = client.get(reverse(name, args=[experiment.pk]) + (f"?{query}" if query else ""))
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    return response, b"".join(response.streaming_content)


def test_the_votes_csv_names_each_sides_output_and_the_numbers_behind_its_labels(client, viewer, study_votes):
    client.force_login(viewer)
    rows = download(client, "export_votes", study_votes)
    assert len(rows) == Rating.objects.count() and "votes_counted" not in rows[0]
    assert "left_text" not in rows[0]
    native = Checkpoint.objects.get(name="tiny-exports").native_context
    for row in rows:
        comparison = Comparison.objects.get(pk=int(row["comparison_id"]))
        assert (int(row["left_output_id"]), int(row["right_output_id"])) == (
            comparison.left_id,
            comparison.right_id,
        )
        assert row["is_identical"] == "0" and row["flag_decision"] == ""
        sides = {
            row[f"{side}_arm"]: {c: row[f"{side}_{c}"] for c in SIDE_COLUMNS} for side in ("left", "right")
        }
        dynamic, yarn = sides["k=1"], sides["k=4"]
        assert (dynamic["k"], dynamic["k_max"], dynamic["context_kind"], dynamic["yarn_factor"]) == (
            "",
            "8",
            "native",
            "1",
        )
        assert dynamic["window"] == str(native)
        assert (yarn["k"], yarn["k_max"], yarn["context_kind"], yarn["yarn_factor"]) == (
            "4",
            "4",
            "yarn",
            "4",
        )
        assert yarn["window"] == str(native * 4) and yarn["context"] == "YaRN ×4"


def test_the_votes_csv_carries_the_texts_as_shown_when_asked(client, viewer, study_votes):
    client.force_login(viewer)
    rows = download(client, "export_votes", study_votes, "texts=1")
    assert list(rows[0])[-2:] == ["left_text", "right_text"]
    for row in rows:
        comparison = Comparison.objects.get(pk=int(row["comparison_id"]))
        assert (row["left_text"], row["right_text"]) == (comparison.left_text, comparison.right_text)


def test_the_spreadsheet_variant_starts_with_a_byte_order_mark(client, viewer, study_votes):
    client.force_login(viewer)
    response, body = raw_download(client, "export_votes", study_votes, "excel=1")
    assert body.startswith(b"\xef\xbb\xbf") and "-excel" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert list(rows[0]) == VOTE_COLUMNS and len(rows) == Rating.objects.count()
    assert {row["right_context"] for row in rows} | {row["left_context"] for row in rows} >= {"YaRN ×4"}


def test_the_outputs_export_has_every_output_with_its_arm_prompt_cost_and_routing(
    client, viewer, study_votes
):
    client.force_login(viewer)
    response, body = raw_download(client, "export_outputs", study_votes)
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    records = [json.loads(line) for line in body.decode().split("\n") if line]
    assert len(records) == Generation.objects.filter(experiment=study_votes).count()
    deep = [r for r in records if r["arm"] == "k=4"]
    assert {r["category"] for r in records} == {"routine", "philosophy"}
    for record in deep:
        assert record["text"] == f"k=4 on {record['prompt']}" and record["seed"] == 0
        assert (record["depth_k"], record["compute_experts"], record["tokens_per_s"]) == (4, 4.5, 7.5)
        assert record["routing"]["mean_active_experts_per_layer"] == [4.0, 4.0]
        assert record["context_config"] == {"kind": "yarn", "factor": 4.0, "input_budget": None}
    assert all(
        r["depth_k"] is None and r["depth_policy"]["kind"] == "dynamic" for r in records if r["arm"] == "k=1"
    )


def test_the_timeline_scores_the_votes_so_far_at_every_tenth(client, viewer, study_votes):
    client.force_login(viewer)
    rows = download(client, "export_timeline", study_votes)
    assert list(rows[0]) == TIMELINE_COLUMNS and "no_bootstrap" in TIMELINE_COLUMNS[-1]
    total = Rating.objects.count()
    steps = sorted({int(r["votes_so_far"]) for r in rows})
    assert steps[-1] == total and len(steps) == min(10, total)
    last = {(r["category"], r["arm"]): r for r in rows if int(r["votes_so_far"]) == total}
    assert set(last) == {(c, a) for c in ("all", "routine", "philosophy") for a in ("k=1", "k=4")}
    assert int(last[("all", "k=4")]["arm_votes"]) == total
    assert float(last[("all", "k=4")]["score_point_estimate_no_bootstrap"]) > float(
        last[("all", "k=1")]["score_point_estimate_no_bootstrap"]
    )
    times = [datetime.fromisoformat(r["last_vote_at"]) for r in rows]
    assert times == sorted(times)


def test_the_export_command_writes_outputs_timeline_and_spreadsheet_votes(study_votes, tmp_path):
    target = tmp_path / "outputs.jsonl"
    call_command(
        "export_results", study_votes.name, "--kind", "outputs", "--out", str(target), stderr=io.StringIO()
    )
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(records) == Generation.objects.filter(experiment=study_votes).count()
    out = io.StringIO()
    call_command("export_results", study_votes.name, "--kind", "timeline", stdout=out)
    assert list(csv.DictReader(io.StringIO(out.getvalue())))[-1]["votes_so_far"] == str(
        Rating.objects.count()
    )
    votes = tmp_path / "votes.csv"
    call_command(
        "export_results", study_votes.name, "--texts", "--excel", "--out", str(votes), stderr=io.StringIO()
    )
    assert votes.read_bytes().startswith(b"\xef\xbb\xbf")
    assert "left_text" in next(csv.DictReader(votes.open(encoding="utf-8-sig")))


def test_the_export_command_writes_parquet_or_says_what_is_missing(study_votes, tmp_path):
    target = tmp_path / "outputs.parquet"
    arguments = ["export_results", study_votes.name, "--kind", "outputs", "--format", "parquet"]
    try:
        import pyarrow.parquet as pq
    except ImportError:
        with pytest.raises(CommandError, match="pyarrow"):
            call_command(*arguments, "--out", str(target))
        return
    call_command(*arguments, "--out", str(target), stderr=io.StringIO())
    table = pq.read_table(target).to_pylist()
    assert len(table) == Generation.objects.filter(experiment=study_votes).count()
    assert {row["arm"] for row in table} == {"k=1", "k=4"}


def test_the_export_command_refuses_a_format_the_kind_has_not(study_votes):
    with pytest.raises(CommandError, match="--kind votes is written as csv"):
        call_command("export_results", study_votes.name, "--format", "jsonl")
    with pytest.raises(CommandError, match="--out"):
        call_command("export_results", study_votes.name, "--kind", "outputs", "--format", "parquet")


def test_the_votes_csv_counts_identical_outputs_and_gives_each_outputs_length(
    client, viewer, rater, experiment
):
    from dashboard.services import next_comparison, submit_rating

    voted = next_comparison(rater=rater).page
    submit_rating(rater=rater, token=voted.token, verdict="left")
    identical = Comparison.objects.filter(experiment=experiment).exclude(pk=voted.pk).order_by("pk").last()
    Comparison.objects.filter(pk=identical.pk).update(is_identical=True)
    client.force_login(viewer)
    rows = download(client, "export_votes", experiment)
    assert [r["verdict"] for r in rows if r["comparison_id"] == str(identical.pk)] == ["identical"]
    same = next(r for r in rows if r["comparison_id"] == str(identical.pk))
    assert (same["rater"], same["winner"], same["is_identical"]) == ("", "", "1")
    vote = next(r for r in rows if r["comparison_id"] == str(voted.pk))
    left = Generation.objects.get(pk=vote["left_output_id"])
    assert vote["left_new_tokens"] == str(left.new_tokens) and vote["left_markdown_elements"].isdigit()
    assert len(rows) == 2

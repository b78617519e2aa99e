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
from dashboard.exports import AGGREGATE_COLUMNS, VOTE_COLUMNS, csv_chunks, csv_field, safe_cell
from dashboard.models import Rating
from evaluator.models import Comparison, Experiment
from tests.dashboard.results_data import bulk_votes, experiment_with_outputs, make_raters, rate_everything

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
    assert int(careful[0]["votes_excluded"]) == int(everything[0]["votes_counted"]) // 2


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

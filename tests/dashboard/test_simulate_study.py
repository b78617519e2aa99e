"""manage.py simulate_study: simulated studies with known truth through the real verdict code."""

import json
from io import StringIO

from django.core.management import call_command


def test_simulate_study_reports_the_rates_the_page_promises() -> None:
    out = StringIO()
    call_command("simulate_study", studies=2, rounds=30, prompts=6, seed=3, stdout=out)
    report = json.loads(out.getvalue())
    for key in ("false_verdict_rate_null", "coverage_difference", "length_flip_detected_rate"):
        assert 0.0 <= report[key] <= 1.0, key
    for key in ("power_at_votes_needed", "power_where_lead_as_planned", "power_at_votes_needed_same_raters"):
        assert key in report, key
    counts = report["counts"]
    assert (counts["null_studies"], counts["effect_studies"], counts["length_studies"]) == (2, 1, 1)
    assert report["counts"]["intervals_checked"] > 0
    assert report["design"]["looks"] == 10 and report["design"]["n_categories"] == 4


def test_the_same_seed_gives_the_same_report() -> None:
    reports = []
    for _ in range(2):
        out = StringIO()
        call_command("simulate_study", studies=1, rounds=20, prompts=4, seed=5, stdout=out)
        report = json.loads(out.getvalue())
        report.pop("seconds")
        reports.append(report)
    assert reports[0] == reports[1]

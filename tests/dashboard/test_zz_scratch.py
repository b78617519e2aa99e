from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.dashboard.test_rate import HTMX, experiment, held_comparison, rating_client  # noqa: F401


def test_print(rating_client, rater, experiment):  # noqa: F811
    rating_client.get(reverse("rate"))
    token = held_comparison(rater).token
    with CaptureQueriesContext(connection) as ctx:
        rating_client.post(reverse("vote", args=[token]), {"verdict": "left"}, headers=HTMX)
    for q in ctx.captured_queries:
        print("\n>>>", q["sql"])

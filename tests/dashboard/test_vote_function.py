"""The vote's database function on PostgreSQL: made after every migrate, and made again only when its SQL
has changed. What it does is tested with the rating page (tests/dashboard/test_rate.py, `vote_path`)."""

import pytest
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection

from dashboard import services


@pytest.fixture
def postgresql(db):
    if connection.vendor != "postgresql":
        pytest.skip("the vote's function is PostgreSQL's (make test sets DATABASE_URL)")


def function_oid() -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regproc(%s)::oid", [services.VOTE_FUNCTION])
        return cursor.fetchone()[0]


def test_migrate_made_it_and_an_unchanged_function_is_left_alone(postgresql):
    made = function_oid()
    assert made is not None
    services.install_vote_function()
    assert function_oid() == made


def test_a_changed_or_missing_function_is_made_again_after_migrate(postgresql):
    stale = function_oid()
    with connection.cursor() as cursor:
        cursor.execute(f"COMMENT ON FUNCTION {services.VOTE_FUNCTION} IS 'an older definition'")
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    remade = function_oid()
    assert remade not in (None, stale)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP FUNCTION {services.VOTE_FUNCTION}")
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert function_oid() is not None


def test_votes_go_on_after_the_function_is_made_again_under_prepared_calls(
    postgresql, rater, tiny_model_path
):
    """The call is prepared after five uses on a connection; a migrate that makes the function again
    must not break it (the call names its columns, so its result type stays)."""
    from tests.factories import make_checkpoint, run_generations, scheduled_experiment

    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4, 8), seeds=(0, 1, 2))
    run_generations(experiment)
    services.start_session(rater=rater, target=100)
    assignment, votes = services.next_comparison(rater=rater), 0
    while assignment is not None:
        if votes == 6:
            with connection.cursor() as cursor:
                cursor.execute(f"COMMENT ON FUNCTION {services.VOTE_FUNCTION} IS 'an older definition'")
            emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
        assignment = services.vote_and_next(
            rater=rater, token=assignment.page.token, verdict="tie"
        ).assignment
        votes += 1
    assert votes > 7

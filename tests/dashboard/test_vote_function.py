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

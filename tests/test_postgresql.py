"""config.postgresql: a pooled connection is checked only when the server has spoken on it."""

import copy
import time

import psycopg
import pytest
from django.db import connection

from config.postgresql.base import DatabaseWrapper


@pytest.fixture
def pooled_db(db):
    """A wrapper of its own over a pool of one connection, so that each test knows which one it gets."""
    if connection.vendor != "postgresql" or connection.pool is None:
        pytest.skip("the pool runs on PostgreSQL (make test sets DATABASE_URL)")
    settings = copy.deepcopy(connection.settings_dict)
    settings["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 1}
    wrapper = DatabaseWrapper(settings, alias="pool-check-test")
    yield wrapper
    wrapper.close()
    wrapper.close_pool()


def backend_pid(db) -> int:
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def checks_counted(db, monkeypatch) -> list:
    checks = []
    original = db.pool.check_connection
    monkeypatch.setattr(db.pool, "check_connection", lambda conn: (checks.append(1), original(conn)))
    return checks


def admin_connection(db) -> psycopg.Connection:
    s = db.settings_dict
    # autocommit: pg_stat_activity is read once per transaction, so a loop in one would never see a change
    return psycopg.connect(
        dbname=s["NAME"], user=s["USER"], host=s["HOST"], port=s["PORT"] or None, autocommit=True
    )


def test_a_healthy_pooled_connection_is_reused_without_a_round_trip(pooled_db, monkeypatch):
    pid = backend_pid(pooled_db)
    checks = checks_counted(pooled_db, monkeypatch)
    pooled_db.close()  # back to the pool
    assert backend_pid(pooled_db) == pid
    assert checks == []


def test_a_connection_the_server_dropped_is_replaced_without_an_error(pooled_db, monkeypatch):
    pid = backend_pid(pooled_db)
    pooled_db.close()
    with admin_connection(pooled_db) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the server did not end the connection"
            time.sleep(0.02)
    checks = checks_counted(pooled_db, monkeypatch)
    new_pid = backend_pid(pooled_db)  # no error reaches the caller
    assert new_pid != pid
    assert checks == [1]  # the dropped connection was asked, and only it


def test_a_socket_is_read_for_input_past_selects_1024_descriptors():
    """A busy web process (WebSockets, exports) holds many descriptors; the check must not need select."""
    import os
    import resource
    import socket

    from config.postgresql.base import has_input

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= 1500:
        pytest.skip("this process may not open descriptor 1500")
    ours, theirs = socket.socketpair()
    high = os.dup2(ours.fileno(), 1500)

    class Conn:
        def fileno(self) -> int:
            return high

    try:
        assert not has_input(Conn())
        theirs.send(b"E")  # as the server's farewell would be
        assert has_input(Conn())
    finally:
        os.close(high)
        ours.close()
        theirs.close()

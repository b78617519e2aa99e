"""Django's PostgreSQL backend, with a health check of pooled connections that costs no round trip.

Django checks a connection it takes from its psycopg 3 pool by sending the server an empty query
(CONN_HEALTH_CHECKS): one more round trip on every request, a tenth of those of a vote. A connection
resting in the pool has nothing to read, though, while one that the server has dropped (a restart,
`pg_terminate_backend`, an idle timeout) has the server's last message or the end of the stream waiting
on its socket. So a pooled connection is asked only when its socket has something to read, and one that
fails is thrown away for another. Go's MySQL driver checks a reused connection the same way. A server
that vanished without closing the connection (a host gone, no FIN) shows nothing on the socket: the
first statement then fails, as it would after Django's check, and the pool's max_idle bounds how long a
connection rests unchecked.

Settings turn Django's check off where the pool is on (config.settings); connections outside a pool (the
Celery workers) keep Django's own check.
"""

import select

from django.db.backends.postgresql import base
from psycopg import Error


def has_input(connection) -> bool:
    """Whether the server has sent something on a connection that sent no query: news of its end.
    (poll, not select: a busy process's descriptors go past select's 1024.)"""
    try:
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, Error):  # closed already
        return True


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        pool = self.pool
        if pool is None:
            return connection
        # Each failed check takes a dropped connection out of the pool; once those are gone the pool
        # opens new ones, which have nothing to read.
        for _ in range(pool.max_size + 1):
            if not has_input(connection):
                break
            try:
                pool.check_connection(connection)
                break
            except Error:
                pool.putconn(connection)  # a broken connection is closed, not kept
                connection = super().get_new_connection(conn_params)
        return connection

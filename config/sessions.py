"""Sessions as Django stores them, read with fixed SQL.

Every request reads its session and then its user. Django builds both queries with the ORM each time,
and under load that building took more CPU than the database took to answer them: about a sixth of a
web process's time on the rating loop. The behaviour is Django's own (the same rows, the same expiry
check, the same classes underneath); only the statement is written once. See also config.auth.
"""

from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone


class SessionStore(db.SessionStore):
    """Django's database-backed sessions, read with one fixed statement."""

    def _get_session_from_db(self):
        model = self.model
        connection = connections[router.db_for_read(model)]
        table = connection.ops.quote_name(model._meta.db_table)
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT session_data, expire_date FROM {table} WHERE session_key = %s AND expire_date > %s",
                [self.session_key, now],
            )
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        return model(session_key=self.session_key, session_data=row[0], expire_date=row[1])

"""The logged-in user, read with fixed SQL on every request (see config.sessions for why)."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db import connections, router


class UserBackend(ModelBackend):
    """Django's ModelBackend, fetching the session's user with one fixed statement."""

    def get_user(self, user_id):
        User = get_user_model()
        quote = connections[router.db_for_read(User)].ops.quote_name
        # Columns by name, never `*`: a prepared `SELECT *` fails once a migration adds a column.
        columns = ", ".join(quote(field.column) for field in User._meta.concrete_fields)
        sql = f"SELECT {columns} FROM {quote(User._meta.db_table)} WHERE {quote(User._meta.pk.column)} = %s"
        user = next(iter(User._default_manager.raw(sql, [user_id])), None)
        return user if user is not None and self.user_can_authenticate(user) else None

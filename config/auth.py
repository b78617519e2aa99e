"""The logged-in user, read with fixed SQL on every request (see config.sessions for why)."""

import json
from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.db import connections, router

from config import rows


@cache
def _user_sql(vendor: str, alias: str) -> str:
    """The user and, in the same statement, the names of their groups (which every rater page checks)."""
    User = get_user_model()
    quote = connections[alias].ops.quote_name
    members, groups = quote(User.groups.through._meta.db_table), quote(Group._meta.db_table)
    names = f"FROM {members} m JOIN {groups} g ON g.id = m.group_id WHERE m.user_id = u.id"
    if vendor == "postgresql":
        names = f"ARRAY(SELECT g.name {names})"
    else:  # a JSON array: names are text of any kind, separators included
        names = f"(SELECT json_group_array(g.name) {names})"
    return (
        f"SELECT {rows.columns(User, 'u', alias)}, {names} FROM {quote(User._meta.db_table)} u"
        f" WHERE u.{quote(User._meta.pk.column)} = %s"
    )


class UserBackend(ModelBackend):
    """Django's ModelBackend, fetching the session's user and their group names with one fixed
    statement. The names are kept on the user for this request (`group_names`)."""

    def get_user(self, user_id):
        User = get_user_model()
        alias = router.db_for_read(User)
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(_user_sql(connection.vendor, alias), [user_id])
            row = cursor.fetchone()
        if row is None:
            return None
        user = rows.instance(User, row, alias)
        names = row[-1]
        if isinstance(names, str):
            names = json.loads(names)
        user.group_names = frozenset(names or ())
        return user if self.user_can_authenticate(user) else None

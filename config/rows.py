"""Model instances read with fixed SQL on hot paths, converted from database values as the ORM does.

`Manager.raw()` maps columns to fields by name and looks up every field's converters again for each
query; on a page that reads the user and the rating session on every request that bookkeeping cost more
than the two statements. Here the columns are the model's concrete fields in order, named (never `*`:
a prepared `SELECT *` fails once a migration adds a column), and their converters are found once.
"""

from functools import cache

from django.db import connections, models


def columns(model: type[models.Model], table: str = "", alias: str = "default") -> str:
    """The model's concrete columns by name, in field order, optionally qualified by a table alias, quoted
    for the database `alias`."""
    quote = connections[alias].ops.quote_name
    prefix = f"{table}." if table else ""
    return ", ".join(prefix + quote(field.column) for field in model._meta.concrete_fields)


@cache
def _converters(model: type[models.Model], alias: str) -> tuple[tuple[int, object, tuple], ...]:
    connection = connections[alias]
    found = []
    for i, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if converters:
            found.append((i, col, tuple(converters)))
    return tuple(found)


def instance(model: type[models.Model], row, alias: str = "default") -> models.Model:
    """A model instance from the first len(concrete fields) values of a row read with `columns(model)`."""
    fields = model._meta.concrete_fields
    values = list(row[: len(fields)])
    connection = connections[alias]
    for i, col, converters in _converters(model, alias):
        value = values[i]
        for convert in converters:
            value = convert(value, col, connection)
        values[i] = value
    return model.from_db(alias, [field.attname for field in fields], values)

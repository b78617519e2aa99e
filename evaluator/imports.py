"""Import and export of categories and prompts as CSV or JSON Lines: all or nothing, problems by line.

An import reads the whole file, checks every record, and writes nothing unless every record is right; the
error it raises lists each problem with its line and field, so the file can be fixed in one pass. Importing
the same file twice changes nothing the second time, and an export imports back as it was.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from evaluator.models import Category, Prompt

FORMATS = ("csv", "jsonl")
PROMPT_FIELDS = ("category", "text", "tags", "external_id")
CATEGORY_FIELDS = ("slug", "name", "description", "order")
MAX_RECORDS = 100_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one record; line 0 means the file as a whole."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}, {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ImportFailed(Exception):
    """Nothing was imported; `problems` says what to fix, by line and field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems[:20]))


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    categories_created: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.created} created", f"{self.updated} updated", f"{self.unchanged} already present"]
        if self.categories_created:
            parts.append(f"new categories: {', '.join(self.categories_created)}")
        return ", ".join(parts)


def format_from_name(filename: str) -> str:
    """The format a file name suggests (.csv or .jsonl/.ndjson), or "" when it says nothing."""
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return ""


def _text(file: IO[Any] | bytes | str) -> str:
    data = file if isinstance(file, bytes | str) else file.read()
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed(
            [Problem(0, "", f"The file is not UTF-8 text (byte {exc.start}): save it as UTF-8.")]
        ) from None


def _records(text: str, format: str, fields: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) pairs; a record that cannot be read at all raises ImportFailed with its line."""
    if format == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in fields[:2] if name not in header]
            unknown = [name for name in header if name not in fields]
            if missing or unknown:
                problems = [Problem(1, name, "column missing from the header") for name in missing]
                problems += [Problem(1, name, f"unknown column: use {', '.join(fields)}") for name in unknown]
                raise ImportFailed(problems)
            start = reader.line_num + 1
            for row in reader:
                if len(row) > len(header):
                    raise ImportFailed([Problem(start, "", f"more cells than the {len(header)} columns")])
                if any(cell.strip() for cell in row):
                    yield start, dict(zip(header, row, strict=False))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise ImportFailed([Problem(reader.line_num, "", f"not valid CSV: {exc}")]) from None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFailed(
                [Problem(number, "", f"not valid JSON: {exc.msg} (column {exc.colno})")]
            ) from None
        if not isinstance(record, dict):
            raise ImportFailed([Problem(number, "", "each line must be one JSON object")])
        yield number, record


def _read(file: IO[Any] | bytes | str, format: str, fields: tuple[str, ...]) -> list[tuple[int, dict]]:
    if format not in FORMATS:
        raise ImportFailed([Problem(0, "", f"Unknown format {format!r}: use csv or jsonl.")])
    records = list(_records(_text(file), format, fields))
    if not records:
        raise ImportFailed([Problem(0, "", "The file holds no records.")])
    if len(records) > MAX_RECORDS:
        raise ImportFailed([Problem(0, "", f"More than {MAX_RECORDS:,} records: split the file.")])
    return records


def _string(record: dict, name: str, line: int, problems: list[Problem], *, required: bool) -> str:
    value = record.get(name)
    if value is None or value == "":
        if required:
            problems.append(Problem(line, name, "required"))
        return ""
    if not isinstance(value, str):
        problems.append(Problem(line, name, f"must be text, got {json.dumps(value)}"))
        return ""
    return value


def _tags(value: Any, line: int, problems: list[Problem]) -> list[str]:
    """A JSON list of strings, or in CSV a cell of tags separated by semicolons."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                problems.append(Problem(line, "tags", "starts like a JSON list but is not one"))
                return []
        else:
            value = value.split(";")
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        problems.append(Problem(line, "tags", 'must be a list of text tags, e.g. ["reasoning", "short"]'))
        return []
    tags = []
    for tag in (t.strip() for t in value):
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _unknown_keys(record: dict, fields: tuple[str, ...], line: int, problems: list[Problem]) -> None:
    for name in record:
        if name not in fields:
            problems.append(Problem(line, name, f"unknown field: use {', '.join(fields)}"))


def import_prompts(
    *, file: IO[Any] | bytes | str, format: str, create_categories: bool = False
) -> ImportReport:
    """Add the prompts of a CSV or JSONL file (fields: category slug, text, tags, external_id).

    A prompt already present (same external_id, or same category and text when it has none) is left as it
    is; an external_id that exists with another text is a problem, since outputs may already depend on it.
    Unknown categories are a problem unless create_categories is set.
    """
    records = _read(file, format, PROMPT_FIELDS)
    problems: list[Problem] = []
    categories = {c.slug: c for c in Category.objects.all()}
    new_slugs: list[str] = []
    parsed = []
    seen_ids: dict[str, int] = {}
    seen_texts: dict[tuple[str, str], int] = {}
    for line, record in records:
        _unknown_keys(record, PROMPT_FIELDS, line, problems)
        slug = _string(record, "category", line, problems, required=True).strip()
        text = _string(record, "text", line, problems, required=True)
        if text and not text.strip():
            problems.append(Problem(line, "text", "is only white space"))
        external_id = _string(record, "external_id", line, problems, required=False).strip()
        tags = _tags(record.get("tags"), line, problems)
        if len(external_id) > Prompt._meta.get_field("external_id").max_length:
            problems.append(Problem(line, "external_id", "longer than 100 characters"))
        if slug and slug not in categories and slug not in new_slugs:
            if not create_categories:
                known = ", ".join(sorted(categories)) or "none yet"
                problems.append(
                    Problem(
                        line,
                        "category",
                        f"unknown category {slug!r} (known: {known}); import "
                        "categories first or allow new categories",
                    )
                )
            else:
                try:
                    validate_slug(slug)
                except ValidationError:
                    problems.append(
                        Problem(line, "category", f"{slug!r} is not a slug: letters, digits, - and _ only")
                    )
                else:
                    new_slugs.append(slug)
        if external_id:
            if external_id in seen_ids:
                problems.append(
                    Problem(
                        line, "external_id", f"{external_id!r} already used on line {seen_ids[external_id]}"
                    )
                )
            seen_ids.setdefault(external_id, line)
        elif slug and text:
            if (slug, text) in seen_texts:
                problems.append(Problem(line, "text", f"same prompt as line {seen_texts[(slug, text)]}"))
            seen_texts.setdefault((slug, text), line)
        parsed.append((line, slug, text, tags, external_id))
    existing_by_id = {
        p.external_id: p
        for p in Prompt.objects.filter(external_id__in=list(seen_ids)).select_related("category")
    }
    for line, slug, text, _, external_id in parsed:
        prompt = existing_by_id.get(external_id) if external_id else None
        if prompt is not None and (prompt.text != text or prompt.category.slug != slug):
            problems.append(
                Problem(
                    line,
                    "external_id",
                    f"{external_id!r} is prompt {prompt.pk}, which has another "
                    "category or text; give the new prompt another id",
                )
            )
    if problems:
        raise ImportFailed(problems)

    report = ImportReport()
    with transaction.atomic():
        for slug in new_slugs:
            categories[slug] = Category.objects.create(slug=slug, name=slug.replace("_", " ").capitalize())
            report.categories_created.append(slug)
        present = set(
            Prompt.objects.filter(
                category__slug__in={slug for _, slug, *_ in parsed}, external_id=""
            ).values_list("category__slug", "text")
        )
        new = []
        for _line, slug, text, tags, external_id in parsed:
            if (external_id and external_id in existing_by_id) or (
                not external_id and (slug, text) in present
            ):
                report.unchanged += 1
                continue
            new.append(Prompt(category=categories[slug], text=text, tags=tags, external_id=external_id))
        Prompt.objects.bulk_create(new, batch_size=1000)
        report.created = len(new)
    return report


def import_categories(*, file: IO[Any] | bytes | str, format: str) -> ImportReport:
    """Add or update categories from CSV or JSONL (fields: slug, name, description, order)."""
    records = _read(file, format, CATEGORY_FIELDS)
    problems: list[Problem] = []
    parsed = []
    seen: dict[str, int] = {}
    for line, record in records:
        _unknown_keys(record, CATEGORY_FIELDS, line, problems)
        slug = _string(record, "slug", line, problems, required=True).strip()
        name = _string(record, "name", line, problems, required=True).strip()
        description = _string(record, "description", line, problems, required=False)
        order = record.get("order")
        if order in (None, ""):
            order = 0
        elif isinstance(order, str) and order.strip().isdigit():
            order = int(order)
        elif not isinstance(order, int) or isinstance(order, bool) or order < 0:
            problems.append(Problem(line, "order", f"must be a whole number ≥ 0, got {json.dumps(order)}"))
            order = 0
        if slug:
            try:
                validate_slug(slug)
            except ValidationError:
                problems.append(
                    Problem(line, "slug", f"{slug!r} is not a slug: letters, digits, - and _ only")
                )
            if slug in seen:
                problems.append(Problem(line, "slug", f"{slug!r} already on line {seen[slug]}"))
            seen.setdefault(slug, line)
        if len(slug) > 50:
            problems.append(Problem(line, "slug", "longer than 50 characters"))
        if len(name) > 100:
            problems.append(Problem(line, "name", "longer than 100 characters"))
        parsed.append((slug, name, description, order))
    if problems:
        raise ImportFailed(problems)

    report = ImportReport()
    with transaction.atomic():
        existing = {c.slug: c for c in Category.objects.select_for_update().filter(slug__in=list(seen))}
        for slug, name, description, order in parsed:
            category = existing.get(slug)
            if category is None:
                Category.objects.create(slug=slug, name=name, description=description, order=order)
                report.created += 1
            elif (category.name, category.description, category.order) != (name, description, order):
                category.name, category.description, category.order = name, description, order
                category.save(update_fields=["name", "description", "order"])
                report.updated += 1
            else:
                report.unchanged += 1
    return report


def _write(rows: Iterable[dict[str, Any]], format: str, fields: tuple[str, ...]) -> str:
    if format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}: use csv or jsonl.")
    out = io.StringIO(newline="")
    if format == "csv":
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    else:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out.getvalue()


def export_prompts(*, prompts: Iterable[Prompt], format: str) -> str:
    """The prompts as a file import_prompts reads back (tags joined by ";" in CSV)."""
    return _write(
        (
            {
                "category": p.category.slug,
                "text": p.text,
                "tags": ";".join(p.tags or []) if format == "csv" else list(p.tags or []),
                "external_id": p.external_id,
            }
            for p in prompts
        ),
        format,
        PROMPT_FIELDS,
    )


def export_categories(*, categories: Iterable[Category], format: str) -> str:
    return _write(
        (
            {"slug": c.slug, "name": c.name, "description": c.description, "order": c.order}
            for c in categories
        ),
        format,
        CATEGORY_FIELDS,
    )

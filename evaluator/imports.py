"""Import and export of categories and prompts as CSV or JSON Lines: all or nothing, problems by line.

An import reads the whole file, checks every record, and writes nothing unless every record is right; the
error it raises lists each problem with its line and field, so the file can be fixed in one pass. Importing
the same file twice changes nothing the second time, and an export imports back as it was.
"""

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from evaluator import scoring
from evaluator.models import Category, Prompt

FORMATS = ("csv", "jsonl")
PROMPT_FIELDS = ("category", "text", "tags", "external_id", "reference_answer", "scoring_rule", "tolerance")
CATEGORY_FIELDS = ("slug", "name", "description", "order")
MAX_RECORDS = 100_000
MAX_ORDER = 2_147_483_647  # the largest value the database column holds
MAX_PROBLEMS = 200  # listed in full; beyond that the report says how many more there are
DEFAULT_MAX_UPLOAD_MB = 10


def max_upload_bytes() -> int:
    """The largest file an import reads (DEPTH_ARENA_MAX_UPLOAD_MB), checked before anything is parsed."""
    return int(getattr(settings, "MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)) * 1024 * 1024


def too_large(size: int) -> str:
    """The message for a file over the limit, or "" when it fits."""
    limit = max_upload_bytes()
    if size <= limit:
        return ""
    return (
        f"The file is {size / 1024 / 1024:.1f} MB, over the {limit // (1024 * 1024)} MB limit "
        "(DEPTH_ARENA_MAX_UPLOAD_MB): split it into smaller files."
    )


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
        problems = sorted(problems, key=lambda p: p.line)
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], Problem(0, "", f"… and {more} more problems not listed")]
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
    if isinstance(file, bytes | str):
        data = file
    else:
        size = getattr(file, "size", None)
        if size is not None and too_large(size):
            raise ImportFailed([Problem(0, "", too_large(size))])
        data = file.read(max_upload_bytes() + 1)
    if too_large(len(data)):
        raise ImportFailed([Problem(0, "", too_large(len(data)))])
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed(
            [Problem(0, "", f"The file is not UTF-8 text (byte {exc.start}): save it as UTF-8.")]
        ) from None


Records = list[tuple[int, dict[str, Any]]]


def _csv_records(text: str, fields: tuple[str, ...]) -> tuple[Records, list[Problem]]:
    """Rows read strictly: a quote left open is an error on its line, not a cell that swallows the rows
    after it. A row with too many cells is reported and the reading goes on."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: Records = []
    problems: list[Problem] = []
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        raise ImportFailed([Problem(1, "", f"the header is not valid CSV: {exc}")]) from None
    missing = [name for name in fields[:2] if name not in header]
    unknown = [name for name in header if name not in fields]
    if missing or unknown:
        problems = [Problem(1, name, "column missing from the header") for name in missing]
        problems += [Problem(1, name, f"unknown column: use {', '.join(fields)}") for name in unknown]
        raise ImportFailed(problems)
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A quote opened on this row and never closed (or closed in the middle of a cell): what
            # follows cannot be read reliably, so the reading stops here.
            problems.append(
                Problem(
                    start,
                    "",
                    f"not valid CSV ({exc}): a quote opened on this line is not closed, or is followed by "
                    'text; write a quote inside a quoted cell as two quotes ("")',
                )
            )
            break
        if len(row) > len(header):
            problems.append(Problem(start, "", f"{len(row)} cells, more than the {len(header)} columns"))
        elif any(cell.strip() for cell in row):
            records.append((start, dict(zip(header, row, strict=False))))
        start = reader.line_num + 1
    return records, problems


def _jsonl_records(text: str) -> tuple[Records, list[Problem]]:
    records: Records = []
    problems: list[Problem] = []
    # Lines end at "\n" only: JSON strings may hold U+2028 or U+0085, where str.splitlines would cut.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, "", f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            problems.append(Problem(number, "", "JSON nested too deeply: each line must be one flat object"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(number, "", "each line must be one JSON object"))
            continue
        records.append((number, record))
    return records, problems


def _read(file: IO[Any] | bytes | str, format: str, fields: tuple[str, ...]) -> tuple[Records, list[Problem]]:
    """The file's records with their lines, and the problems of records that could not be read at all."""
    if format not in FORMATS:
        raise ImportFailed([Problem(0, "", f"Unknown format {format!r}: use csv or jsonl.")])
    text = _text(file)
    if format == "csv":
        records, problems = _csv_records(text, fields)
    else:
        records, problems = _jsonl_records(text)
    if not records and not problems:
        raise ImportFailed([Problem(0, "", "The file holds no records.")])
    if len(records) > MAX_RECORDS:
        raise ImportFailed([Problem(0, "", f"More than {MAX_RECORDS:,} records: split the file.")])
    return records, problems


def _storable(value: str, line: int, name: str, problems: list[Problem]) -> bool:
    """Whether the database can store the text: no NUL character, no lone surrogate (a "\\ud800" escape)."""
    if "\x00" in value:
        problems.append(Problem(line, name, "contains a NUL character (\\u0000), which cannot be stored"))
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = f"\\u{ord(value[exc.start]):04x}"
        problems.append(Problem(line, name, f"contains a lone surrogate ({code}), which is not a character"))
        return False
    return True


def _string(record: dict, name: str, line: int, problems: list[Problem], *, required: bool) -> str:
    value = record.get(name)
    if value is None or value == "":
        if required:
            problems.append(Problem(line, name, "required"))
        return ""
    if not isinstance(value, str):
        problems.append(Problem(line, name, f"must be text, got {_shown(value)}"))
        return ""
    return value if _storable(value, line, name, problems) else ""


def _shown(value: Any) -> str:
    """A value as JSON, cut short for a message."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (RecursionError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "…"


def _tags(value: Any, line: int, problems: list[Problem]) -> list[str]:
    """A JSON list of strings, or in CSV a cell of tags separated by semicolons."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                problems.append(Problem(line, "tags", "starts like a JSON list but is not one"))
                return []
        else:
            value = value.split(";")
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        problems.append(Problem(line, "tags", 'must be a list of text tags, e.g. ["reasoning", "short"]'))
        return []
    if not all(_storable(tag, line, "tags", problems) for tag in value):
        return []
    tags = []
    for tag in (t.strip() for t in value):
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _reference(record: dict, line: int, problems: list[Problem]) -> dict[str, Any]:
    """The optional reference answer, its scoring rule (default: contains) and a numeric tolerance."""
    answer = _string(record, "reference_answer", line, problems, required=False)
    rule = _string(record, "scoring_rule", line, problems, required=False).strip() or "contains"
    tolerance = record.get("tolerance")
    if tolerance in (None, ""):
        tolerance = None
    elif isinstance(tolerance, str):
        try:
            tolerance = float(tolerance)
        except ValueError:
            problems.append(Problem(line, "tolerance", f"must be a number, got {tolerance!r}"))
            return {}
    elif isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        problems.append(Problem(line, "tolerance", f"must be a number, got {_shown(tolerance)}"))
        return {}
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        problems.append(Problem(line, "tolerance", f"must be a finite number ≥ 0, got {tolerance!r}"))
        return {}
    if not answer:
        if tolerance is not None or record.get("scoring_rule") not in (None, ""):
            problems.append(Problem(line, "reference_answer", "a scoring rule or tolerance needs an answer"))
        return {}
    try:
        scoring.check_reference(reference=answer, rule=rule, tolerance=tolerance)
    except scoring.ScoringError as exc:
        field = "scoring_rule" if rule not in scoring.RULES else "reference_answer"
        problems.append(Problem(line, field, str(exc)))
        return {}
    return {"reference_answer": answer, "scoring_rule": rule, "tolerance": tolerance}


def _unknown_keys(record: dict, fields: tuple[str, ...], line: int, problems: list[Problem]) -> None:
    for name in record:
        if name not in fields:
            shown = name if _storable(name, line, "", []) else ascii(name)
            problems.append(Problem(line, shown, f"unknown field: use {', '.join(fields)}"))


def import_prompts(
    *, file: IO[Any] | bytes | str, format: str, create_categories: bool = False
) -> ImportReport:
    """Add the prompts of a CSV or JSONL file (fields: category slug, text, tags, external_id).

    A prompt already present (same external_id, or same category and text when it has none) is left as it
    is; an external_id that exists with another text is a problem, since outputs may already depend on it.
    Unknown categories are a problem unless create_categories is set.
    """
    records, problems = _read(file, format, PROMPT_FIELDS)
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
        reference = _reference(record, line, problems)
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
        parsed.append((line, slug, text, tags, external_id, reference))
    existing_by_id = {
        p.external_id: p
        for p in Prompt.objects.filter(external_id__in=list(seen_ids)).select_related("category")
    }
    for line, slug, text, _, external_id, _ in parsed:
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
        for _line, slug, text, tags, external_id, reference in parsed:
            if (external_id and external_id in existing_by_id) or (
                not external_id and (slug, text) in present
            ):
                report.unchanged += 1
                continue
            new.append(
                Prompt(category=categories[slug], text=text, tags=tags, external_id=external_id, **reference)
            )
        Prompt.objects.bulk_create(new, batch_size=1000)
        report.created = len(new)
    return report


def import_categories(*, file: IO[Any] | bytes | str, format: str) -> ImportReport:
    """Add or update categories from CSV or JSONL (fields: slug, name, description, order)."""
    records, problems = _read(file, format, CATEGORY_FIELDS)
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
        if isinstance(order, str) and order.strip().isdecimal() and len(order.strip()) <= 10:
            order = int(order)
        if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= MAX_ORDER:
            problems.append(
                Problem(line, "order", f"must be a whole number from 0 to {MAX_ORDER:,}, got {_shown(order)}")
            )
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
                "reference_answer": p.reference_answer,
                "scoring_rule": p.scoring_rule if p.reference_answer else "",
                "tolerance": p.tolerance if p.tolerance is not None else "",
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

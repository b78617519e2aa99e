"""manage.py import_prompts: add prompts (or categories) from a CSV or JSON Lines file, all or nothing."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator import imports


class Command(BaseCommand):
    help = (
        "Import prompts from a CSV (header: category,text,tags,external_id) or JSON Lines file. Nothing is "
        "written unless every record is right; problems are listed by line and field. With --categories the "
        "file holds categories (slug,name,description,order) instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="path of the file to import")
        parser.add_argument(
            "--format", choices=imports.FORMATS, help="csv or jsonl (default: from the file name)"
        )
        parser.add_argument(
            "--create-categories",
            action="store_true",
            help="create categories the file names that do not exist yet",
        )
        parser.add_argument(
            "--categories", action="store_true", help="the file holds categories, not prompts"
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        format = options["format"] or imports.format_from_name(path.name)
        if not format:
            raise CommandError(f"{path.name}: say --format csv or --format jsonl (the name ends in neither).")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from exc
        try:
            if options["categories"]:
                report = imports.import_categories(file=data, format=format)
            else:
                report = imports.import_prompts(
                    file=data, format=format, create_categories=options["create_categories"]
                )
        except imports.ImportFailed as exc:
            lines = "\n".join(f"  {problem}" for problem in exc.problems)
            raise CommandError(f"Nothing was imported from {path}. Fix these problems:\n{lines}") from exc
        self.stdout.write(self.style.SUCCESS(f"Imported {path}: {report}."))

"""Load the demo: categories, prompts, arms at depth 1/2/4/8 of the small model, accounts, an experiment."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from dashboard.permissions import raters_group
from evaluator import demo, scheduling
from evaluator.models import Experiment

RESET_COMMAND = "reset_passwords admin rater"


class Command(BaseCommand):
    help = (
        "Create the demo data and the accounts 'admin' and 'rater' (passwords printed once; "
        f"new ones: manage.py {RESET_COMMAND})."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--schedule", action="store_true", help="Also queue the demo experiment's jobs.")

    def handle(self, *args, schedule: bool, **options) -> None:
        model_path = settings.TINY_MOE_PATH
        if not (model_path / "config.json").exists():
            raise CommandError(
                f"No small model at {model_path}: run `python manage.py build_tiny_moe` first."
            )
        experiment = demo.ensure_demo_data(checkpoint_path=model_path)
        self.stdout.write(
            f"Demo experiment: {experiment.name} ({experiment.prompts.count()} prompts, "
            f"{experiment.variants.count()} arms, {experiment.raters_per_comparison} raters per comparison: "
            "'rater' and 'admin' both rate)"
        )
        created = [self._account("admin", staff=True), self._account("rater", staff=False)]
        if not all(created):
            self.stdout.write(f"Forgot the demo passwords? python manage.py {RESET_COMMAND}")
        if schedule and experiment.status == Experiment.Status.DRAFT:
            try:
                report = scheduling.schedule_experiment(experiment=experiment)
            except scheduling.ScheduleError as exc:
                raise CommandError(
                    "The demo could not be scheduled:\n- " + "\n- ".join(exc.problems)
                ) from exc
            self.stdout.write(f"Scheduled: {report.generations} outputs, {report.comparisons} comparisons.")

    def _account(self, username: str, *, staff: bool) -> bool:
        """Create the account with a password printed once; False when it existed already."""
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Account {username!r} exists already (password unchanged).")
            return False
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(
            username=username, password=password, is_staff=staff, is_superuser=staff
        )
        user.groups.add(raters_group())
        self.stdout.write(
            self.style.WARNING(f"Account {username!r} created, password: {password}  (shown once)")
        )
        return True

"""Give accounts new random passwords, printed once (the demo's: reset_passwords admin rater)."""

from django.core.management.base import BaseCommand, CommandError

from dashboard import raters


class Command(BaseCommand):
    help = (
        "Give the named accounts new random passwords and print them once; a login lockout after wrong "
        "passwords is lifted too. Forgot the demo's? manage.py reset_passwords admin rater"
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("usernames", nargs="+", help="User names, e.g. admin rater.")

    def handle(self, *args, usernames: list[str], **options) -> None:
        try:
            passwords = raters.reset_passwords(usernames=list(dict.fromkeys(usernames)))
        except raters.RaterError as exc:
            raise CommandError(str(exc)) from exc
        for username, password in passwords.items():
            self.stdout.write(
                self.style.WARNING(f"Account {username!r}, new password: {password}  (shown once)")
            )

"""Managing raters: create_rater, reset_passwords, one-time set-password links and the invite page."""

import re
from io import StringIO

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from dashboard.models import RaterProfile
from dashboard.permissions import RATE
from evaluator.models import Checkpoint, Experiment

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def experiment(tmp_path) -> Experiment:
    checkpoint = Checkpoint.objects.create(name="ckpt", path=str(tmp_path))
    return Experiment.objects.create(name="depth study", checkpoint=checkpoint, seeds=[0])


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def printed_passwords(output: str) -> dict[str, str]:
    return dict(re.findall(r"^(\S+) \(created\): password: (\S+)", output, re.MULTILINE))


def test_create_rater_prints_a_password_once_for_each_new_rater(raters_group):
    output = run("create_rater", "nina", "omar@example.org")

    passwords = printed_passwords(output)
    assert set(passwords) == {"nina", "omar@example.org"}
    nina = User.objects.get(username="nina")
    assert nina.check_password(passwords["nina"]) and nina.has_perm(RATE) and not nina.is_staff
    assert User.objects.get(username="omar@example.org").email == "omar@example.org"
    assert not RaterProfile.objects.exists()  # no experiments named: they rate any


def test_create_rater_assigns_experiments_by_name_or_id(experiment):
    run("create_rater", "nina", "--experiments", str(experiment.pk))

    assert list(RaterProfile.objects.get(user__username="nina").experiments.all()) == [experiment]


def test_an_existing_account_keeps_its_password(rater):
    output = run("create_rater", "bob")

    assert "bob (exists already): password unchanged" in output
    assert User.objects.get(username="bob").check_password("password-bob")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nina", "no/slash"], "Not a user name or an e-mail address: 'no/slash'"),
        (["nina", "--experiments", "nope"], "No experiment with id or name 'nope'"),
    ],
)
def test_create_rater_misuse_changes_nothing(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run("create_rater", *args)
    assert not User.objects.filter(username="nina").exists()


def test_a_one_time_link_sets_the_password_and_logs_the_rater_in(client, raters_group):
    output = run("create_rater", "nina", "--link", "--base-url", "http://arena.example")

    link = re.search(r"link \(one use, 3 days\): (\S+)", output).group(1)
    assert link.startswith("http://arena.example/accounts/set-password/")
    assert not User.objects.get(username="nina").has_usable_password()
    form_page = client.get(link.removeprefix("http://arena.example"), follow=True)
    assert "Choose the password you will log in with" in form_page.content.decode()

    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": "a long new password", "new_password2": "a long new password"},
        follow=True,
    )

    assert done.redirect_chain[-1][0] == reverse("rate")
    assert User.objects.get(username="nina").check_password("a long new password")
    client.logout()
    again = client.get(link.removeprefix("http://arena.example"), follow=True)
    assert "This link was used already or has expired" in again.content.decode()


def test_reset_passwords_gives_new_ones_and_lifts_a_lockout(admin_user, rater):
    AccessAttempt.objects.create(username="bob", ip_address="127.0.0.1", failures_since_start=9)

    output = run("reset_passwords", "alice", "bob")

    passwords = dict(re.findall(r"Account '(\w+)', new password: (\S+)", output))
    assert set(passwords) == {"alice", "bob"}
    assert User.objects.get(username="bob").check_password(passwords["bob"])
    assert not User.objects.get(username="alice").check_password("password-alice")
    assert not AccessAttempt.objects.filter(username="bob").exists()


def test_reset_passwords_of_an_unknown_account_changes_nothing(rater):
    with pytest.raises(CommandError, match="No account named 'nobody'"):
        run("reset_passwords", "bob", "nobody")
    assert User.objects.get(username="bob").check_password("password-bob")


# The invite page


def test_staff_invite_many_raters_at_once_and_see_their_passwords_once(client, admin_user, experiment):
    client.force_login(admin_user)
    url = reverse("admin:dashboard_raterprofile_invite")

    response = client.post(
        url,
        {"raters": "nina\nomar@example.org\n\nnina", "experiments": [experiment.pk], "access": "password"},
    )

    page = response.content.decode()
    assert response.status_code == 200 and "the only place they are shown" in page
    for username in ("nina", "omar@example.org"):
        password = re.search(
            rf"<td>{re.escape(username)}</td>\s*<td>created</td>\s*<td><code>(\S+)</code>", page
        )
        assert User.objects.get(username=username).check_password(password.group(1))
        assert list(RaterProfile.objects.get(user__username=username).experiments.all()) == [experiment]
    assert 'id="invitations"' not in client.get(url).content.decode()


def test_the_invite_page_can_hand_out_links_instead(client, admin_user):
    client.force_login(admin_user)

    page = client.post(
        reverse("admin:dashboard_raterprofile_invite"), {"raters": "nina", "access": "link"}
    ).content.decode()

    assert re.search(r"<code>http://testserver/accounts/set-password/[^<]+</code>", page)


def test_the_invite_page_names_what_is_not_a_user_name(client, admin_user):
    client.force_login(admin_user)

    page = client.post(
        reverse("admin:dashboard_raterprofile_invite"), {"raters": "nina\nbad name!", "access": "password"}
    ).content.decode()

    assert "Not a user name or an e-mail address: &#x27;name!&#x27;" in page
    assert not User.objects.filter(username="nina").exists()


def test_staff_without_the_right_to_add_users_cannot_invite(client):
    clerk = User.objects.create_user("frank", password="x", is_staff=True)
    client.force_login(clerk)

    assert client.get(reverse("admin:dashboard_raterprofile_invite")).status_code == 403


def test_votes_are_read_only_in_the_admin(client, admin_user):
    client.force_login(admin_user)

    assert client.get(reverse("admin:dashboard_rating_add")).status_code == 403
    assert client.get(reverse("admin:dashboard_rating_changelist")).status_code == 200
    assert client.get(reverse("admin:dashboard_lease_changelist")).status_code == 200


def test_load_demo_says_how_to_get_new_demo_passwords(tiny_model_path):
    first = run("load_demo")
    again = run("load_demo")

    assert re.search(r"Account 'rater' created, password: \S+", first)
    assert "Account 'rater' exists already (password unchanged)" in again
    assert "Forgot the demo passwords? python manage.py reset_passwords admin rater" in again
    assert Experiment.objects.get(name__startswith="Demo").raters_per_comparison == 2

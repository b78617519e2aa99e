"""Admin for raters: invite them, assign experiments; votes, sessions, leases and login attempts to look at.

Votes are records of what people judged, counted against each comparison's k: nobody edits or deletes them
here. Sessions, leases and login attempts are written by the service and only shown.
"""

from typing import Any

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from dashboard import raters
from dashboard.models import Lease, RaterProfile, Rating, RatingSession
from evaluator.admin.formatting import format_seconds, truncated
from evaluator.models import Experiment


class ViewOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class InviteForm(forms.Form):
    raters = forms.CharField(
        label="User names or e-mail addresses",
        widget=forms.Textarea(attrs={"rows": 8, "cols": 40}),
        help_text="One per line. An e-mail address becomes the user name. Existing accounts keep their "
        "password and are added to the raters group and the experiments.",
    )
    experiments = forms.ModelMultipleChoiceField(
        Experiment.objects.exclude(status=Experiment.Status.CANCELLED),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The experiments they rate. None ticked: any experiment.",
    )
    access = forms.ChoiceField(
        label="Give each new rater",
        choices=[
            ("password", "a random password (shown once on the next page)"),
            ("link", "a one-time link to choose a password (shown once on the next page)"),
        ],
        initial="password",
        widget=forms.RadioSelect,
    )

    def clean_raters(self) -> list[str]:
        try:
            return raters.parse_identifiers(self.cleaned_data["raters"])
        except raters.RaterError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(RaterProfile)
class RaterProfileAdmin(admin.ModelAdmin):
    change_list_template = "admin/dashboard/raterprofile/change_list.html"
    list_display = ["user", "limited_to"]
    list_select_related = ["user"]
    filter_horizontal = ["experiments"]
    search_fields = ["user__username", "user__email"]
    fields = ["user", "experiments"]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).prefetch_related("experiments")

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        formfield = super().formfield_for_manytomany(db_field, request, **kwargs)
        if db_field.name == "experiments":
            formfield.help_text = "The experiments this rater rates. None chosen: any experiment."
        return formfield

    @admin.display(description="experiments")
    def limited_to(self, obj: RaterProfile) -> str:
        names = [e.name for e in obj.experiments.all()]
        return truncated(", ".join(names), 80) if names else "any"

    def get_urls(self):
        return [
            path(
                "invite/", self.admin_site.admin_view(self.invite_view), name="dashboard_raterprofile_invite"
            ),
            *super().get_urls(),
        ]

    def invite_view(self, request: HttpRequest) -> HttpResponse:
        """Invite many raters at once; the result page shows their passwords or links, once."""
        if not (self.has_add_permission(request) and request.user.has_perm("auth.add_user")):
            raise PermissionDenied
        form = InviteForm(request.POST or None)
        invitations = []
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            base_url = request.build_absolute_uri("/") if data["access"] == "link" else None
            invitations = raters.invite_raters(
                identifiers=data["raters"], experiments=data["experiments"], base_url=base_url
            )
            created = sum(i.created for i in invitations)
            self.message_user(
                request,
                f"{created} raters created, {len(invitations) - created} existing accounts added. "
                "Copy the passwords or links now: they are not shown again.",
                messages.SUCCESS,
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Invite raters",
            "form": form,
            "invitations": invitations,
            "link_lifetime": raters.link_lifetime(),
        }
        return TemplateResponse(request, "admin/dashboard/raterprofile/invite.html", context)


@admin.register(RatingSession)
class RatingSessionAdmin(ViewOnlyAdmin):
    list_display = ["id", "rater", "target", "started_at", "ended_at"]
    list_filter = ["rater"]
    list_select_related = ["rater"]


@admin.register(Rating)
class RatingAdmin(ViewOnlyAdmin):
    list_display = ["id", "experiment", "rater", "verdict", "time", "gold_correct", "too_fast", "created_at"]
    list_filter = ["verdict", "comparison__experiment", "too_fast", "gold_correct"]
    list_select_related = ["comparison__experiment", "rater"]
    fields = ["comparison", "rater", "verdict", "criteria", "comment", "time", "gold_correct", "too_fast"]
    readonly_fields = ["time"]

    @admin.display(description="experiment", ordering="comparison__experiment")
    def experiment(self, obj: Rating) -> str:
        return truncated(obj.comparison.experiment.name, 40)

    @admin.display(description="time", ordering="seconds")
    def time(self, obj: Rating) -> str:
        away = f" (+ {format_seconds(obj.away_seconds)} away)" if obj.away_seconds else ""
        return format_seconds(obj.seconds) + away


@admin.register(Lease)
class LeaseAdmin(ViewOnlyAdmin):
    list_display = ["id", "comparison_id", "rater", "started_at", "expires_at", "completed_at", "skipped"]
    list_select_related = ["rater"]


# Login attempts and lockouts (django-axes) are records to read. An attempt may be deleted: that lifts the
# lockout (as `manage.py reset_passwords` and `axes_reset` do).
class LoginAttemptAdmin(AccessAttemptAdmin):
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class LoginLogAdmin(AccessLogAdmin, ViewOnlyAdmin):
    pass


class LoginFailureAdmin(AccessFailureLogAdmin, ViewOnlyAdmin):
    pass


for model, model_admin in [
    (AccessAttempt, LoginAttemptAdmin),
    (AccessLog, LoginLogAdmin),
    (AccessFailureLog, LoginFailureAdmin),
]:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from dashboard import research_views, views, views_followup

urlpatterns = [
    path("", views.home, name="home"),
    # A one-time link from an invitation (dashboard.raters): choose a password, then logged in.
    path(
        "accounts/set-password/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="registration/set_password.html",
            post_reset_login=True,
            post_reset_login_backend="django.contrib.auth.backends.ModelBackend",
            success_url=reverse_lazy("home"),
        ),
        name="set_password",
    ),
    path("rate/", views.rate, name="rate"),
    path("rate/session/start/", views.session_start, name="session_start"),
    path("rate/session/pause/", views.session_pause, name="session_pause"),
    path("rate/session/resume/", views.session_resume, name="session_resume"),
    path("rate/session/end/", views.session_end, name="session_end"),
    path("rate/undo/", views.undo, name="undo_vote"),
    path("rate/<str:token>/vote/", views.vote, name="vote"),
    path("rate/<str:token>/skip/", views.skip, name="skip"),
    path("rate/<str:token>/flag/", views.flag, name="flag"),
    path("results/", views.results_list, name="results_list"),
    path("results/<int:experiment_id>/", views.results, name="results"),
    path("results/<int:experiment_id>/follow-up/", views_followup.follow_up, name="follow_up"),
    path("results/<int:experiment_id>/votes.csv", views.export_votes, name="export_votes"),
    path("results/<int:experiment_id>/aggregates.csv", views.export_aggregates, name="export_aggregates"),
    path("results/<int:experiment_id>/outputs.jsonl", views.export_outputs, name="export_outputs"),
    path("results/<int:experiment_id>/timeline.csv", views.export_timeline, name="export_timeline"),
    path("outputs/", research_views.outputs_list, name="outputs_list"),
    path("outputs/<int:experiment_id>/", research_views.outputs, name="outputs"),
    path("flags/", research_views.flag_queue, name="flag_queue"),
    path("flags/<int:comparison_id>/review/", research_views.flag_review, name="flag_review"),
]

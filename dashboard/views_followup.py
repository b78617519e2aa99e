"""The results page's "check it with raters" button: the recommended policy against fixed d, scheduled."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from dashboard import recommend
from evaluator import scheduling
from evaluator.models import Experiment


@require_POST
@login_required
@permission_required("evaluator.add_experiment", raise_exception=True)
def follow_up(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    recommendation = recommend.recommend_policy(experiment=experiment)
    if recommendation is None:
        messages.error(request, "There are no votes to recommend a depth policy from yet.")
        return redirect("results", experiment_id=experiment.pk)
    try:
        new = recommend.create_follow_up(experiment=experiment, recommendation=recommendation)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("results", experiment_id=experiment.pk)
    try:
        scheduling.schedule_experiment(experiment=new)
    except scheduling.ScheduleError as exc:
        messages.warning(request, f"Created {new.name} as a draft; it could not be scheduled: {exc}")
    else:
        messages.success(
            request, f"Scheduled {new.name}: the recommended policy against fixed depth, rated blind."
        )
    return redirect("admin:evaluator_experiment_change", new.pk)

"""Staff pages of the evaluator: the jobs page (queued, running, done and failed jobs, workers) and retry."""

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.db.models import Count, Max, Min, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from evaluator import scheduling
from evaluator.heartbeat import OFFLINE_AFTER
from evaluator.models import Experiment, Generation, Job, WorkerStatus
from evaluator.selectors import job_progress

LIST_LIMIT = 50


@dataclass(frozen=True)
class Failure:
    """Failed outputs of one experiment, with the messages they failed with."""

    experiment: Experiment
    count: int
    messages: list[str]
    last: object


def failures() -> list[Failure]:
    rows = (
        Generation.objects.filter(status=Generation.Status.FAILED)
        .values("experiment_id")
        .annotate(count=Count("pk"), last=Max("finished_at"))
        .order_by("-last")[:LIST_LIMIT]
    )
    experiments = Experiment.objects.in_bulk([r["experiment_id"] for r in rows])
    result = []
    for row in rows:
        errors = (
            Generation.objects.filter(experiment_id=row["experiment_id"], status=Generation.Status.FAILED)
            .values("error")
            .annotate(n=Count("pk"), first=Min("pk"))
            .order_by("-n", "first")[:3]
        )
        result.append(
            Failure(
                experiment=experiments[row["experiment_id"]],
                count=row["count"],
                messages=[f"{e['error'] or 'no message'} ({e['n']}×)" for e in errors],
                last=row["last"],
            )
        )
    return result


def jobs_context() -> dict:
    now = timezone.now()
    workers = list(WorkerStatus.objects.all())
    online = {w.hostname for w in workers if w.last_seen >= now - OFFLINE_AFTER}
    jobs = Job.objects.select_related("experiment", "variant")
    running = list(jobs.filter(status=Job.Status.RUNNING).order_by("started_at")[:LIST_LIMIT])
    for job in running:
        job.worker_offline = bool(job.worker) and job.worker not in online
    queued = list(jobs.filter(status=Job.Status.QUEUED).order_by("queued_at")[:LIST_LIMIT])
    done = list(jobs.filter(status=Job.Status.DONE).order_by("-finished_at")[:LIST_LIMIT])
    progress = job_progress(jobs=[*running, *queued, *done], now=now)
    for job in [*running, *queued, *done]:
        job.progress = progress[job.pk]
    return {
        "now": now,
        "workers": [(w, w.hostname in online) for w in workers],
        "queued": queued,
        "running": running,
        "done": done,
        "failed_jobs": list(jobs.filter(status=Job.Status.FAILED).order_by("-finished_at")[:LIST_LIMIT]),
        "failures": failures(),
        "counts": Job.objects.aggregate(
            **{status: Count("pk", filter=Q(status=status)) for status in Job.Status.values}
        ),
    }


@require_GET
@login_required
@permission_required("evaluator.view_job", raise_exception=True)
def jobs(request: HttpRequest) -> HttpResponse:
    template = "evaluator/jobs.html#live" if request.htmx else "evaluator/jobs.html"
    context = {**jobs_context(), "can_retry": request.user.has_perm("evaluator.change_experiment")}
    return render(request, template, context)


@require_POST
@login_required
@permission_required("evaluator.change_experiment", raise_exception=True)
def retry(request: HttpRequest, experiment_id: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=experiment_id)
    try:
        count = scheduling.retry_failed(experiment=experiment)
    except Exception as exc:
        messages.error(request, f"{experiment}: the failed outputs could not be queued again ({exc}).")
    else:
        messages.success(request, f"{experiment}: {count} failed outputs queued again.")
    return redirect("jobs")

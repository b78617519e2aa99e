from django.urls import path

from evaluator import views

urlpatterns = [
    path("", views.jobs, name="jobs"),
    path("experiments/<int:experiment_id>/retry/", views.retry, name="retry_failed"),
]

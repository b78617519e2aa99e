from django.urls import path

from dashboard.consumers import ExperimentConsumer
from evaluator.consumers import JobsConsumer

websocket_urlpatterns = [
    path("ws/experiments/<int:experiment_id>/", ExperimentConsumer.as_asgi()),
    path("ws/jobs/", JobsConsumer.as_asgi()),
]

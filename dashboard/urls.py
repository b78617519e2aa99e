from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.home, name="home"),
    path("rate/", views.rate, name="rate"),
    path("rate/<str:token>/vote/", views.vote, name="vote"),
    path("results/", views.results_list, name="results_list"),
    path("results/<int:experiment_id>/", views.results, name="results"),
    path("results/<int:experiment_id>/votes.csv", views.export_votes, name="export_votes"),
]

from django.urls import path

from webapp.lab import api, views

app_name = "lab"

urlpatterns = [
    path("", views.job_list, name="jobs"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/new/pretrain/", views.submit_pretrain, name="submit_pretrain"),
    path("jobs/new/evaluate/", views.submit_evaluate, name="submit_evaluate"),
    path("jobs/<int:pk>/", views.job_detail, name="job"),
    path("jobs/<int:pk>/curves/", views.job_curves, name="job_curves"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry, name="job_retry"),
    path("jobs/<int:pk>/clone/", views.job_clone, name="job_clone"),
    path("jobs/<int:pk>/gallery/", views.job_gallery, name="job_gallery"),
    path("jobs/<int:pk>/gallery/<int:round_index>/<str:name>", views.job_gallery_media, name="job_gallery_media"),
    path("compare/", views.compare, name="compare"),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path("leaderboard/export.<str:fmt>", views.leaderboard_export, name="leaderboard_export"),
    path("leaderboard/pin/", views.leaderboard_pin, name="leaderboard_pin"),
    path("leaderboard/reevaluate/", views.leaderboard_reevaluate, name="leaderboard_reevaluate"),
    path("datasets/", views.datasets, name="datasets"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset"),
    path("team/", views.switch_team, name="switch_team"),
    path("mlflow/", views.mlflow_access, name="mlflow_access"),
    path("api/jobs", api.jobs, name="api_jobs"),
    path("api/jobs/<int:pk>", api.job_detail, name="api_job"),
    path("api/jobs/<int:pk>/cancel", api.job_cancel, name="api_job_cancel"),
    path("api/jobs/<int:pk>/retry", api.job_retry, name="api_job_retry"),
    path("api/leaderboard", api.leaderboard, name="api_leaderboard"),
    path("api/datasets", api.datasets, name="api_datasets"),
]

from django.urls import path

from . import views

app_name = "reports"
urlpatterns = [
    path("", views.index, name="index"),
    path("count/", views.start, name="start"),
    path("count/<uuid:job_id>/", views.report, name="report"),
]

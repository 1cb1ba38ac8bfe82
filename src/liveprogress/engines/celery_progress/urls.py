"""celery-progress's URL, answered from liveprogress's jobs: include these in place
of ``celery_progress.urls`` (the namespace stays ``celery_progress``, so
``{% url 'celery_progress:task_status' task_id %}`` keeps working)."""

from django.urls import re_path

from . import views

app_name = "celery_progress"
urlpatterns = [
    re_path(r"^(?P<task_id>[\w-]+)/$", views.get_progress, name="task_status"),
]

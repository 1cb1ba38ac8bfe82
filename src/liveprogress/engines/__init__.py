"""Progress for the tasks of the queues people already run.

A task of Celery (:mod:`liveprogress.engines.celery`), RQ
(:mod:`~liveprogress.engines.rq`), Dramatiq (:mod:`~liveprogress.engines.dramatiq`)
or Django's Tasks framework (:mod:`~liveprogress.engines.django_tasks`) gets a
liveprogress job, made when the task is enqueued and owned by whoever enqueued
it, and a :class:`~liveprogress.progress.Progress` while it runs in that
engine's worker. What the adapters share is in :mod:`~liveprogress.engines.base`;
each adapter imports its engine, which is an extra of its own
(``django-liveprogress[celery]``, ...). The celery-progress switch is
:mod:`liveprogress.engines.celery_progress`.
"""

"""Jobs' result files, kept through Django's storage API.

A job attaches a file with ``progress.attach(name, data)``; it is stored in the
``RESULT_STORAGE`` storage under ``liveprogress/<job id>/<name>`` and listed in
the job's state (``files``), with a download URL that only the owner may use.
``manage.py prunejobs`` deletes them once ``RESULT_TTL`` has passed.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.utils.text import get_valid_filename

from . import conf
from .models import Job

#: Longest file name a job may attach (after cleaning).
NAME_MAX = 100
#: The most files one job may attach (a same-named one replaces, not adds): its
#: state lists them all, and a state stays small enough for one frame.
FILES_MAX = 100


def storage() -> Storage:
    return storages[conf.get("RESULT_STORAGE")]


def clean_name(name: str) -> str:
    """A safe file name (no directories, no odd characters), or ValueError."""
    try:
        cleaned = get_valid_filename(str(name).rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    except SuspiciousFileOperation:
        cleaned = ""
    if not cleaned or len(cleaned) > NAME_MAX or cleaned.startswith("."):
        raise ValueError(f"Not a usable file name: {name!r}")
    return cleaned


def path(job_id: Any, name: str) -> str:
    return f"liveprogress/{job_id}/{name}"


class QuotaExceeded(ValueError):
    """The owner keeps as many bytes of files as MAX_FILE_BYTES_PER_OWNER allows."""


def _bytes(entries: list[dict[str, Any]], *, besides: str = "") -> int:
    return sum(int(entry.get("size") or 0) for entry in entries if entry.get("name") != besides)


def owner_bytes(owner: str, *, besides: Any = None) -> int:
    """Bytes of files the owner's jobs keep (not expired), but the job ``besides``."""
    rows = Job.objects.filter(owner=owner, expired=False).exclude(pk=besides)
    return sum(_bytes(entries or []) for entries in rows.values_list("files", flat=True))


def _check_quota(owner_kept: int, attached: list[dict[str, Any]], name: str, size: int) -> None:
    """Refuse a file that would take its job past FILES_MAX files, or its owner's
    files past MAX_FILE_BYTES_PER_OWNER (``name`` is replaced, not added)."""
    if len(attached) >= FILES_MAX and all(entry.get("name") != name for entry in attached):
        raise QuotaExceeded(f"A job may attach at most {FILES_MAX} files")
    quota = conf.get("MAX_FILE_BYTES_PER_OWNER")
    kept = owner_kept + _bytes(attached, besides=name)
    if kept + size > quota:
        raise QuotaExceeded(
            f"The file {name!r} ({size} bytes) would take this owner's files past "
            f"{quota} bytes (they keep {kept}); wait for older ones to expire or delete them"
        )


def store(
    job: Job,
    name: str,
    content: bytes,
    content_type: str,
    *,
    owner_kept: int = 0,
    attached: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Save ``content`` as the job's file ``name`` (replacing one of that name), within
    the quotas (``QuotaExceeded`` past them). ``owner_kept``: the bytes the owner's
    other jobs keep (:func:`owner_bytes`, read by the caller where its queries run);
    ``attached``: the files the job holds now (default: as its row says)."""
    name = clean_name(name)
    _check_quota(owner_kept, job.files if attached is None else attached, name, len(content))
    where = path(job.pk, name)
    backend = storage()
    if backend.exists(where):
        backend.delete(where)
    saved = backend.save(where, ContentFile(content))
    if saved != where:
        # A storage that renamed it (a race with another writer): keep our name.
        backend.delete(saved)
        raise RuntimeError(f"The storage would not keep {where!r}")
    return {"name": name, "size": len(content), "content_type": content_type}


def find(job: Job, name: str) -> dict[str, Any] | None:
    """The job's listed file ``name``, if it has one and it has not expired."""
    if job.expired:
        return None
    return next((entry for entry in job.files if entry.get("name") == name), None)


def delete_all(job: Job) -> int:
    """Delete the job's stored files; returns how many there were."""
    backend = storage()
    deleted = 0
    for entry in job.files:
        where = path(job.pk, entry["name"])
        if backend.exists(where):
            backend.delete(where)
            deleted += 1
    return deleted

"""The CSV import demo's upload endpoint: ``POST /api/imports/``.

It stores the start of the upload (what the import may read) through the jobs'
storage and starts ``demo.csv_import`` on it, a kind clients can't start
themselves: its parameter names a stored upload, so only this view may.
"""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from liveprogress.api import api_view
from liveprogress.exceptions import BadRequest, TooLarge
from liveprogress.files import storage

from .jobs import UPLOADS, csv_import, csv_max_bytes

#: Uploads declared larger than this are refused (413). Django has received the
#: body by then (put a limit in front of the server too, e.g. nginx's
#: client_max_body_size); up to it, a file over DEMO_CSV_MAX_BYTES is taken, and
#: its import fails saying why.
UPLOAD_HARD_LIMIT = 64 * 1024 * 1024


@api_view("POST")
async def csv_import_upload(request: HttpRequest) -> HttpResponse:
    """Upload a CSV file (multipart, field ``file``) and start the demo import of it.

    201 and the job's state, or for a plain form post a redirect to the import
    page following the job.
    """
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdecimal() or int(declared) > UPLOAD_HARD_LIMIT:
        raise TooLarge(f"Uploads may be at most {UPLOAD_HARD_LIMIT // (1024 * 1024)} MB")
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest("Send the file as multipart/form-data, in the field 'file'")
    uploaded = await sync_to_async(lambda: request.FILES.get("file"))()
    if uploaded is None:
        raise BadRequest("Choose a CSV file to upload", field="file")
    where = await sync_to_async(_store_upload)(uploaded)
    try:
        handle = await csv_import.astart(
            request, upload=where, name=(uploaded.name or "data.csv")[:200], size=uploaded.size
        )
    except BaseException:
        await sync_to_async(storage().delete)(where)
        raise
    if "application/json" not in request.headers.get("Accept", ""):
        return redirect(f"{reverse('demo:import')}?job={handle.id}")
    response = JsonResponse(handle.state, status=201)
    response["Location"] = reverse("liveprogress:job", args=[handle.id])
    return response


def _store_upload(uploaded: Any) -> str:
    """Store the start of the upload (the most the import reads, plus one byte, so it
    can tell a file that is too large); returns its storage path."""
    head = b""
    limit = csv_max_bytes() + 1
    for chunk in uploaded.chunks():
        head += chunk[: limit - len(head)]
        if len(head) >= limit:
            break
    return storage().save(f"{UPLOADS}{uuid.uuid4().hex}.csv", ContentFile(head))

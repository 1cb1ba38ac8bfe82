from __future__ import annotations

from django.contrib import admin

from .models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["kind", "owner", "status", "current", "total", "created_at", "finished_at"]
    list_filter = ["status", "kind"]
    search_fields = ["id", "owner", "kind"]
    readonly_fields = [field.name for field in Job._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False

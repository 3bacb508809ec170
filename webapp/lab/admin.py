from django.contrib import admin

from webapp.lab.models import ApiToken, Dataset, Job, Membership, Result, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "joined_at"]
    list_filter = ["team"]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "layout", "files", "classes", "path"]
    list_filter = ["team", "layout"]
    search_fields = ["name", "path"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "name", "variant", "status", "progress", "placement", "team", "creator", "attempt",
                    "created_at"]
    list_filter = ["status", "kind", "variant", "team"]
    search_fields = ["name", "mlflow_run_id", "celery_task_id", "worker"]
    raw_id_fields = ["parent", "dataset"]
    readonly_fields = ["created_at", "started_at", "finished_at", "heartbeat_at"]


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    list_display = ["job", "benchmark", "split", "protocol", "protocol_version", "seed", "metric_name", "metric_value"]
    list_filter = ["team", "benchmark", "protocol"]
    raw_id_fields = ["job"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued by `manage.py create_token` (which shows the key once); here they are listed, expired or
    revoked (deleted)."""

    list_display = ["user", "name", "prefix", "created_at", "expires_at", "last_used_at"]
    readonly_fields = ["user", "prefix", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False

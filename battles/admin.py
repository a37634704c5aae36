"""The operators' admin: battles with their turns, documents, the event log, and replay.

Everything here is read-only: battles come from uploads, and the log is append-only. The actions
call services; the replay reads only the stored log. Deleting a battle or a document goes through
`battles.live.removal` and `battles.deletion`, like the owner's delete and the retention purge.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypedDict
from uuid import UUID

from django.contrib import admin, messages
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from battles import deletion, selectors, services
from battles.exceptions import BattleStateError
from battles.live import replay, sse
from battles.live.http import arena_config, sse_response
from battles.live.removal import battle_remove_sync
from battles.live.streams import replay_stream
from battles.models import ROLE_ORDER, Battle, Document, Event, Turn
from battles.transcripts import render_markdown

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

STUCK_REASON = "Marked failed by an operator: the battle was stuck."
DELETED_REASON = "Deleted by an operator."


class ReadOnlyMixin:
    """Rows are written by the arena only; the admin looks, exports and runs actions."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Without an object this is the permission actions ask for; objects themselves are view-only.
        # The ignore: mypy checks the mixin alone, whose base (object) has no such method.
        return obj is None and super().has_change_permission(request)  # type: ignore[misc]


class TurnInline(ReadOnlyMixin, admin.StackedInline[Turn, Battle]):
    model = Turn
    extra = 0
    can_delete = False
    fields = (
        "index",
        "round",
        "role",
        "model",
        "status",
        "content",
        "citations",
        "prompt_tokens",
        "completion_tokens",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields
    ordering = ("index",)


class ModelFilter(admin.SimpleListFilter):
    """Battles in which any role used the chosen model."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Battle]) -> list[tuple[str, str]]:
        used: set[str] = set()
        for role in ROLE_ORDER:
            used.update(Battle.objects.values_list(f"{role}_model", flat=True).distinct())
        return [(m, m) for m in sorted(used)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Battle]) -> QuerySet[Battle]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(Q(aggressor_model=value) | Q(defender_model=value) | Q(moderator_model=value))


@admin.action(description="Export transcripts as Markdown", permissions=["view"])
def export_markdown(
    modeladmin: admin.ModelAdmin[Battle], request: HttpRequest, queryset: QuerySet[Battle]
) -> HttpResponse:
    parts = [
        render_markdown(selectors.battle_transcript(battle=b)) for b in queryset.select_related("document")
    ]
    response = HttpResponse("\n---\n\n".join(parts), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="battles.md"'
    return response


@admin.action(description="Export transcripts as JSON", permissions=["view"])
def export_json(
    modeladmin: admin.ModelAdmin[Battle], request: HttpRequest, queryset: QuerySet[Battle]
) -> HttpResponse:
    data = [selectors.battle_transcript(battle=b) for b in queryset.select_related("document")]
    response = HttpResponse(
        json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json; charset=utf-8"
    )
    response["Content-Disposition"] = 'attachment; filename="battles.json"'
    return response


@admin.action(description="Re-run on the same document (as a new battle)", permissions=["change"])
def rerun(modeladmin: admin.ModelAdmin[Battle], request: HttpRequest, queryset: QuerySet[Battle]) -> None:
    for battle in queryset.select_related("document"):
        new = services.battle_retry(battle=battle)
        url = reverse("battles:arena", args=[new.pk])
        modeladmin.message_user(
            request,
            format_html(
                "New battle {} on {}: <a href='{}'>watch it</a>.",
                new.short_id,
                new.document.original_name,
                url,
            ),
        )


@admin.action(description="Mark stuck running battles failed", permissions=["change"])
def mark_failed(
    modeladmin: admin.ModelAdmin[Battle], request: HttpRequest, queryset: QuerySet[Battle]
) -> None:
    done, skipped = 0, 0
    for battle_id in queryset.values_list("pk", flat=True):
        try:
            services.battle_mark_failed(battle_id=battle_id, reason=STUCK_REASON)
            done += 1
        except BattleStateError:
            skipped += 1
    if done:
        modeladmin.message_user(request, f"{done} battle(s) marked failed.")
    if skipped:
        modeladmin.message_user(request, f"{skipped} battle(s) skipped: not running.", level=messages.WARNING)


@admin.register(Battle)
class BattleAdmin(ReadOnlyMixin, admin.ModelAdmin[Battle]):
    list_display = (
        "short_id",
        "document_name",
        "status",
        "winner",
        "scores",
        "rounds",
        "models",
        "tokens",
        "cost_usd",
        "duration",
        "created_at",
    )
    list_filter = ("status", "winner", ModelFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "document__original_name")
    list_select_related = ("document",)
    list_per_page = 50
    ordering = ("-created_at",)
    actions = (export_markdown, export_json, rerun, mark_failed)
    inlines = (TurnInline,)
    readonly_fields = (
        "id",
        "document",
        "status",
        "rounds",
        "aggressor_model",
        "defender_model",
        "moderator_model",
        "jury",
        "winner",
        "aggressor_score",
        "defender_score",
        "summary",
        "verdict_fallback",
        "verdict_source",
        "verdict_details",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "error",
        "lease_owner",
        "lease_expires_at",
        "takeovers",
        "created_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields
    change_form_template = "admin/battles/battle/change_form.html"

    def delete_model(self, request: HttpRequest, obj: Battle) -> None:
        battle_remove_sync(obj.pk, reason=DELETED_REASON)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Battle]) -> None:
        for battle_id in list(queryset.values_list("pk", flat=True)):
            battle_remove_sync(battle_id, reason=DELETED_REASON)

    @admin.display(description="id", ordering="id")
    def short_id(self, battle: Battle) -> str:
        return battle.short_id

    @admin.display(description="document", ordering="document__original_name")
    def document_name(self, battle: Battle) -> str:
        return battle.document.original_name

    @admin.display(description="scores (A : D)")
    def scores(self, battle: Battle) -> str:
        if battle.aggressor_score is None or battle.defender_score is None:
            return "–"
        return f"{battle.aggressor_score:g} : {battle.defender_score:g}"

    @admin.display(description="models")
    def models(self, battle: Battle) -> str:
        chosen = [battle.model_for(role) for role in ROLE_ORDER]
        if len(set(chosen)) == 1:
            return chosen[0]
        return format_html_join(
            ", ", "{}: {}", ((r.label[0], m) for r, m in zip(ROLE_ORDER, chosen, strict=True))
        )

    @admin.display(description="tokens", ordering="completion_tokens")
    def tokens(self, battle: Battle) -> str:
        return f"{battle.prompt_tokens} + {battle.completion_tokens}"

    @admin.display(description="duration")
    def duration(self, battle: Battle) -> str:
        ms = battle.duration_ms
        return "–" if ms is None else f"{ms / 1000:.1f} s"

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        battle = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if battle is not None and battle.is_over:
            extra_context["replay_url"] = reverse("admin:battles_battle_replay", args=[battle.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<uuid:battle_id>/replay/",
                self.admin_site.admin_view(self.replay_view),
                name="battles_battle_replay",
            ),
            # Not wrapped in admin_view, which is synchronous: the stream checks staff itself.
            path("<uuid:battle_id>/replay/events", replay_events, name="battles_battle_replay_events"),
            *super().get_urls(),
        ]

    def replay_view(self, request: HttpRequest, battle_id: UUID) -> HttpResponse:
        battle = get_object_or_404(Battle.objects.select_related("document"), pk=battle_id)
        change_url = reverse("admin:battles_battle_change", args=[battle.pk])
        if not battle.is_over:
            self.message_user(request, "Only a finished or failed battle can be replayed.", messages.WARNING)
            return redirect(change_url)
        try:
            speed = replay.parse_speed(request.GET.get("speed"))
        except ValueError:
            speed = 1.0
        context = {
            **self.admin_site.each_context(request),
            "battle": battle,
            "change_url": change_url,
            "changelist_url": reverse("admin:battles_battle_changelist"),
            "transcript_md_url": reverse("battles:transcript_md", args=[battle.pk]),
            "transcript_json_url": reverse("battles:transcript_json", args=[battle.pk]),
            "speeds": replay.SPEEDS,
            "speed": speed,
            "config": arena_config(
                battle,
                events_url=reverse("admin:battles_battle_replay_events", args=[battle.pk]),
                replay_speed=speed,
            ),
        }
        return render(request, "admin/battles/battle/replay.html", context)


async def replay_events(request: HttpRequest, battle_id: UUID) -> HttpResponse | StreamingHttpResponse:
    """The replay stream: staff only, stored log only, same framing and resume as the live stream."""
    user = await request.auser()
    if not (user.is_active and user.is_staff):
        return HttpResponse("Staff only.", status=403, content_type="text/plain")
    try:
        speed = replay.parse_speed(request.GET.get("speed"))
        after = sse.last_event_id(request.headers.get("Last-Event-ID"), request.GET.get("last_event_id"))
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    status = await selectors.battle_status(battle_id=battle_id)
    if status is None:
        return HttpResponse("No such battle.", status=404, content_type="text/plain")
    if status not in (Battle.Status.FINISHED, Battle.Status.FAILED):
        return HttpResponse(
            "This battle is not over yet; watch it live.", status=409, content_type="text/plain"
        )
    return sse_response(replay_stream(battle_id, after=after, speed=speed))


class BattleCount(TypedDict):
    """What `DocumentAdmin.get_queryset` adds to each document."""

    battle_count: int


@admin.register(Document)
class DocumentAdmin(ReadOnlyMixin, admin.ModelAdmin[Document]):
    list_display = (
        "original_name",
        "human_size",
        "content_type",
        "short_sha256",
        "battle_count",
        "created_at",
    )
    search_fields = ("original_name", "sha256")
    list_filter = ("content_type", ("created_at", admin.DateFieldListFilter))
    fields = (
        "original_name",
        "size",
        "content_type",
        "encoding",
        "sha256",
        "file",
        "created_at",
        "flags",
        "text",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Document]:
        return super().get_queryset(request).annotate(battle_count=Count("battles"))

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[Any, Any], set[Any], list[Any]]:
        """A document's battles go with it (`delete_model`): listed for confirmation, not protecting it."""
        to_delete, model_count, perms_needed, _protected = super().get_deleted_objects(objs, request)
        battles = list(Battle.objects.filter(document__in=list(objs)).select_related("document"))
        listed: list[Any] = [*to_delete, *(f"Battle: {battle}" for battle in battles)]
        counts: dict[Any, Any] = {**model_count, str(Battle._meta.verbose_name_plural): len(battles)}
        return listed, counts if battles else model_count, perms_needed, []

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        _delete_document(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        for document in list(queryset):
            _delete_document(document)

    @admin.display(description="size", ordering="size")
    def human_size(self, document: Document) -> str:
        return filesizeformat(document.size)

    @admin.display(description="sha256")
    def short_sha256(self, document: Document) -> str:
        return document.sha256[:12]

    @admin.display(description="battles", ordering="battle_count")
    def battle_count(self, document: WithAnnotations[Document, BattleCount]) -> int:
        return document.battle_count


def _delete_document(document: Document) -> None:
    """Its battles (ended first where live; the last one takes the document with it), then the
    document itself if no battle did."""
    for battle_id in list(document.battles.values_list("pk", flat=True)):
        battle_remove_sync(battle_id, reason=DELETED_REASON)
    deletion.document_delete(document_id=document.pk)


@admin.register(Event)
class EventAdmin(ReadOnlyMixin, admin.ModelAdmin[Event]):
    list_display = ("battle_short_id", "seq", "type", "offset_ms", "data_preview")
    list_filter = ("type",)
    search_fields = ("battle__id",)
    list_select_related = ("battle",)
    ordering = ("battle", "seq")
    fields = ("battle", "seq", "type", "offset_ms", "data")
    readonly_fields = fields
    show_full_result_count = False  # counting a long log on every page view is wasted work

    def has_delete_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False  # the log is append-only

    @admin.display(description="battle", ordering="battle")
    def battle_short_id(self, event: Event) -> str:
        return event.battle.short_id

    @admin.display(description="data")
    def data_preview(self, event: Event) -> str:
        text = json.dumps(event.data, ensure_ascii=False)
        return text if len(text) <= 120 else text[:119] + "…"

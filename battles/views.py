"""Thin views: validate, call a service or selector, render. Model output is rendered as text only."""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from battles import limits, selectors, services, visitors
from battles.constants import MULTIPART_OVERHEAD_BYTES
from battles.exceptions import DocumentRejected, LimitExceeded
from battles.forms import BattleForm, VisibilityForm
from battles.live import sse
from battles.live.http import arena_config, sse_response
from battles.live.removal import battle_remove
from battles.live.slots import stream_slots
from battles.live.streams import spectate
from battles.models import Battle
from battles.transcripts import render_markdown

_Response = TypeVar("_Response", bound=HttpResponseBase)

# What an unlisted battle's responses tell search engines (its pages carry the same as a meta tag).
NOINDEX = "noindex, nofollow"


def _too_many(response: HttpResponse, exc: LimitExceeded) -> HttpResponse:
    response["Retry-After"] = str(exc.retry_after)
    return response


def see_other(url: str) -> HttpResponse:
    """303: after a POST, the browser GETs the new page."""
    return HttpResponse(status=303, headers={"Location": url})


def _unlisted_unindexed(response: _Response, visibility: str) -> _Response:
    """An unlisted battle is reachable by its link only: no search engine may index what it serves."""
    if visibility != Battle.Visibility.PUBLIC:
        response["X-Robots-Tag"] = NOINDEX
    return response


def _owned_battle(request: HttpRequest, battle_id: UUID) -> Battle:
    """The battle if this browser owns it. Raises Http404 (unknown) or PermissionDenied (not its owner)."""
    battle = get_object_or_404(Battle.objects.select_related("document"), pk=battle_id)
    if not visitors.owns(request, battle.owner_hash):
        raise PermissionDenied("Only the browser that created this battle may change it.")
    return battle


def _to_new_battle(battle: Battle, owner: str) -> HttpResponse:
    """To the arena of a battle this browser just created, which the owner cookie proves it owns."""
    response = see_other(reverse("battles:arena", args=[battle.pk]))
    visitors.remember_token(response, visitors.OWNER_COOKIE, owner)
    return response


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return _home(request, BattleForm())


def _home(
    request: HttpRequest, form: BattleForm, *, error: str | None = None, status: int = 200
) -> HttpResponse:
    context = {
        "form": form,
        "error": error,
        "battles": selectors.battle_list_public(),
        "max_upload_bytes": settings.ARENA_MAX_UPLOAD_BYTES,
    }
    return render(request, "battles/home.html", context, status=status)


@require_POST
def create(request: HttpRequest) -> HttpResponse:
    """Validate the upload, store the document and a pending battle, send the browser to the arena."""
    limit = settings.ARENA_MAX_UPLOAD_BYTES
    too_large = f"The file is too large; the limit is {filesizeformat(limit)}."
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        # Refuse before parsing the body (arena.asgi refuses far larger ones before Django reads them).
        return _home(request, BattleForm(), error=too_large, status=413)
    if len(request.FILES.getlist("file")) > 1 or set(request.FILES) - {"file"}:
        return _home(request, BattleForm(), error="Upload one file at a time.", status=400)
    ip = limits.client_ip(request)
    try:
        limits.check_can_create_battle(ip=ip)
    except LimitExceeded as exc:
        return _too_many(_home(request, BattleForm(), error=exc.message, status=429), exc)
    form = BattleForm(request.POST, request.FILES)
    if not form.is_valid():
        return _home(request, form, error="Please correct the form.", status=400)
    upload = form.cleaned_data["file"]
    if upload.size > limit:
        return _home(request, form, error=too_large, status=413)
    owner = visitors.owner_token(request)
    try:
        battle = services.battle_create_from_upload(
            data=upload.read(),
            name=upload.name or "",
            rounds=form.cleaned_data["rounds"],
            models=form.models(),
            jury=form.jury(),
            visibility=form.visibility(),
            owner_hash=visitors.token_hash(owner),
            client_ip=ip,
        )
    except DocumentRejected as exc:
        return _home(request, form, error=exc.reason, status=exc.status)
    return _to_new_battle(battle, owner)


@require_GET
def arena(request: HttpRequest, battle_id: UUID) -> HttpResponse:
    battle = get_object_or_404(Battle.objects.select_related("document"), pk=battle_id)
    share_url = request.build_absolute_uri(reverse("battles:arena", args=[battle.pk]))
    context = {
        "battle": battle,
        "share_url": share_url,
        "transcript_md_url": reverse("battles:transcript_md", args=[battle.pk]),
        "transcript_json_url": reverse("battles:transcript_json", args=[battle.pk]),
        "retry_url": reverse("battles:retry", args=[battle.pk]),
        "config": arena_config(battle, events_url=reverse("battles:events", args=[battle.pk])),
        "is_owner": visitors.owns(request, battle.owner_hash),
        "visibility_url": reverse("battles:visibility", args=[battle.pk]),
        "delete_url": reverse("battles:delete", args=[battle.pk]),
        # Only a public battle says what it is about to link previews; an unlisted one tells nothing.
        "share_card": selectors.battle_share_card(battle=battle, url=share_url) if battle.is_public else None,
    }
    return _unlisted_unindexed(render(request, "battles/arena.html", context), battle.visibility)


@require_GET
async def events(request: HttpRequest, battle_id: UUID) -> HttpResponse | StreamingHttpResponse:
    """The battle's SSE stream, from seq Last-Event-ID + 1 (or ?last_event_id=N + 1)."""
    try:
        after = sse.last_event_id(request.headers.get("Last-Event-ID"), request.GET.get("last_event_id"))
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    visibility = await Battle.objects.filter(pk=battle_id).values_list("visibility", flat=True).afirst()
    if visibility is None:
        raise Http404("No such battle.")
    try:
        slot = stream_slots.acquire(limits.client_ip(request))
    except LimitExceeded as exc:
        return _too_many(HttpResponse(exc.message, status=429, content_type="text/plain"), exc)
    stream = spectate(battle_id, after=after, slot=slot)
    slot.bind(stream)
    return _unlisted_unindexed(sse_response(stream), visibility)


@require_GET
def transcript_json(request: HttpRequest, battle_id: UUID) -> HttpResponse:
    battle = get_object_or_404(Battle.objects.select_related("document"), pk=battle_id)
    response = JsonResponse(
        selectors.battle_transcript(battle=battle), json_dumps_params={"ensure_ascii": False, "indent": 2}
    )
    return _unlisted_unindexed(response, battle.visibility)


@require_GET
def document_txt(request: HttpRequest, battle_id: UUID) -> HttpResponse:
    """The document's text exactly as the agents got it: the lines (`text.split("\\n")`, from 1)
    that citations refer to. Plain text, so the document's own markup is never rendered."""
    battle = get_object_or_404(Battle.objects.select_related("document"), pk=battle_id)
    response = HttpResponse(battle.document.text, content_type="text/plain; charset=utf-8")
    return _unlisted_unindexed(response, battle.visibility)


@require_GET
def transcript_md(request: HttpRequest, battle_id: UUID) -> HttpResponse:
    battle = get_object_or_404(Battle.objects.select_related("document"), pk=battle_id)
    markdown = render_markdown(selectors.battle_transcript(battle=battle))
    response = HttpResponse(markdown, content_type="text/markdown; charset=utf-8")
    return _unlisted_unindexed(response, battle.visibility)


@require_POST
def retry(request: HttpRequest, battle_id: UUID) -> HttpResponse:
    """Start over on the same document: a new battle, the old one stays as it was."""
    battle = get_object_or_404(Battle.objects.select_related("document"), pk=battle_id)
    ip = limits.client_ip(request)
    try:
        limits.check_can_create_battle(ip=ip)
    except LimitExceeded as exc:
        return _too_many(_home(request, BattleForm(), error=exc.message, status=429), exc)
    owner = visitors.owner_token(request)
    new = services.battle_retry(battle=battle, owner_hash=visitors.token_hash(owner), client_ip=ip)
    return _to_new_battle(new, owner)


@require_POST
def visibility(request: HttpRequest, battle_id: UUID) -> HttpResponse:
    """The owner lists the battle publicly (`public` ticked) or unlists it; back to the arena."""
    battle = _owned_battle(request, battle_id)
    form = VisibilityForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Send public=1 to list the battle, public=0 to unlist it.")
    services.battle_visibility_set(battle_id=battle.pk, visibility=form.visibility())
    return see_other(reverse("battles:arena", args=[battle.pk]))


@require_POST
async def delete(request: HttpRequest, battle_id: UUID) -> HttpResponse:
    """The owner deletes the battle: a live one ends for its spectators first; then home."""
    battle = await sync_to_async(_owned_battle)(request, battle_id)
    await battle_remove(battle.pk)
    return see_other(reverse("battles:home"))

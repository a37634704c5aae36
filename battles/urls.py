"""The arena's URLs. These paths are a public contract: clients rely on them."""

from __future__ import annotations

from django.urls import path

from battles import views

app_name = "battles"

urlpatterns = [
    path("", views.home, name="home"),
    path("battles/", views.create, name="create"),
    path("battles/<uuid:battle_id>/", views.arena, name="arena"),
    path("battles/<uuid:battle_id>/events", views.events, name="events"),
    path("battles/<uuid:battle_id>/document.txt", views.document_txt, name="document_txt"),
    path("battles/<uuid:battle_id>/transcript.md", views.transcript_md, name="transcript_md"),
    path("battles/<uuid:battle_id>/transcript.json", views.transcript_json, name="transcript_json"),
    path("battles/<uuid:battle_id>/retry", views.retry, name="retry"),
    path("battles/<uuid:battle_id>/visibility", views.visibility, name="visibility"),
    path("battles/<uuid:battle_id>/delete", views.delete, name="delete"),
]

"""The arena's URLs."""

from __future__ import annotations

from django.urls import path

from battles import views

app_name = "battles"

urlpatterns = [
    path("", views.home, name="home"),
]

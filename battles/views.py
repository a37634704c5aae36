"""Thin views: validate, call a service or selector, render."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from battles.models import Battle


def home(request: HttpRequest) -> HttpResponse:
    recent = Battle.objects.select_related("document")[:20]
    return render(request, "battles/home.html", {"battles": recent})

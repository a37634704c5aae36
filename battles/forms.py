"""The upload form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from battles.constants import MAX_ROUNDS, MIN_ROUNDS
from battles.models import ROLE_ORDER


class BattleForm(forms.Form):
    file = forms.FileField(label="Document", allow_empty_file=True)
    rounds = forms.IntegerField(label="Rounds", min_value=MIN_ROUNDS, max_value=MAX_ROUNDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rounds"].initial = settings.ARENA_ROUNDS
        for role in ROLE_ORDER:
            default = settings.ARENA_ROLE_MODELS[role]
            self.fields[f"{role}_model"] = forms.ChoiceField(
                label=f"{role.label} model",
                required=False,
                choices=[("", f"Default ({default})"), *((m, m) for m in settings.ARENA_MODEL_CHOICES)],
            )

    def models(self) -> dict[str, str]:
        return {role: self.cleaned_data.get(f"{role}_model") or "" for role in ROLE_ORDER}

"""The upload form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from battles.constants import MAX_JURORS, MAX_ROUNDS, MIN_ROUNDS
from battles.models import ROLE_ORDER, Battle


class BattleForm(forms.Form):
    file = forms.FileField(label="Document", allow_empty_file=True)
    rounds = forms.IntegerField(label="Rounds", min_value=MIN_ROUNDS, max_value=MAX_ROUNDS)
    public = forms.BooleanField(
        label="List this battle publicly",
        required=False,
        help_text="Unticked, the battle is unlisted: only people you give its link can see it.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rounds"].initial = settings.ARENA_ROUNDS
        self.fields["public"].initial = settings.ARENA_DEFAULT_VISIBILITY == Battle.Visibility.PUBLIC
        for role in ROLE_ORDER:
            default = settings.ARENA_ROLE_MODELS[role]
            self.fields[f"{role}_model"] = forms.ChoiceField(
                label=f"{role.label} model",
                required=False,
                choices=[("", f"Default ({default})"), *((m, m) for m in settings.ARENA_MODEL_CHOICES)],
            )

        if settings.ARENA_JURY_CHOICES:
            # Offered only when the operator lists jurors; otherwise every battle gets ARENA_JURY.
            self.fields["jury"] = forms.MultipleChoiceField(
                label="Jury",
                required=False,
                widget=forms.CheckboxSelectMultiple,
                choices=[(m, m) for m in settings.ARENA_JURY_CHOICES],
                initial=[m for m in settings.ARENA_JURY if m in settings.ARENA_JURY_CHOICES],
                help_text=(
                    "Each juror judges the whole battle twice, the sides swapped; the majority decides. "
                    "None ticked: the Moderator decides."
                ),
            )

    def clean_jury(self) -> list[str]:
        jury: list[str] = self.cleaned_data.get("jury") or []
        if len(jury) > MAX_JURORS:
            raise forms.ValidationError(f"Pick at most {MAX_JURORS} jurors.")
        return jury

    def models(self) -> dict[str, str]:
        return {role: self.cleaned_data.get(f"{role}_model") or "" for role in ROLE_ORDER}

    def visibility(self) -> str:
        return Battle.Visibility.PUBLIC if self.cleaned_data.get("public") else Battle.Visibility.UNLISTED

    def jury(self) -> list[str] | None:
        """The jurors picked on the form, or None (ARENA_JURY) when the form offers no jury."""
        return self.cleaned_data.get("jury") if "jury" in self.fields else None


class VisibilityForm(forms.Form):
    """The owner's switch: `public` = 1 (true, on, yes) lists the battle; 0 (false, off, no) or
    absent, as from an unticked checkbox, unlists it. Anything else is refused."""

    TRUE, FALSE = ("1", "true", "on", "yes"), ("", "0", "false", "off", "no")
    public = forms.CharField(required=False, strip=True)

    def clean_public(self) -> bool:
        value = self.cleaned_data["public"].lower()
        if value not in self.TRUE + self.FALSE:
            raise forms.ValidationError("public must be 1 or 0.")
        return value in self.TRUE

    def visibility(self) -> str:
        return Battle.Visibility.PUBLIC if self.cleaned_data.get("public") else Battle.Visibility.UNLISTED

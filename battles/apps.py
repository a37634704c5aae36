from __future__ import annotations

from django.apps import AppConfig


class BattlesConfig(AppConfig):
    name = "battles"
    verbose_name = "Battles"

    def ready(self) -> None:
        # The built-in model is a litellm provider like any other, there before the first battle.
        from battles.providers import sparring

        sparring.register()

from __future__ import annotations

from django.apps import AppConfig


class BattlesConfig(AppConfig):
    name = "battles"
    verbose_name = "Battles"

    def ready(self) -> None:
        # The built-in models are litellm providers like any other, there before the first battle.
        from battles.providers import rules_juror, sparring

        sparring.register()
        rules_juror.register()

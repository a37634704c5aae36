"""The arena's data: uploaded documents, battles, their turns, and the append-only event log."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from battles import constants
from battles.constants import MAX_ROUNDS, MIN_ROUNDS


class Role(models.TextChoices):
    AGGRESSOR = constants.AGGRESSOR, "Aggressor"
    DEFENDER = constants.DEFENDER, "Defender"
    MODERATOR = constants.MODERATOR, "Moderator"


# Speaking order within a round.
ROLE_ORDER = tuple(Role(role) for role in constants.ROLES)


def document_upload_path(instance: Document, filename: str) -> str:
    """A generated name: the client's file name is never used as a path."""
    return f"documents/{uuid.uuid4().hex}"


class Document(models.Model):
    """An uploaded file and the text extracted from it. The text is data, never instructions."""

    file = models.FileField(upload_to=document_upload_path)
    original_name = models.CharField(max_length=255, help_text="Client-supplied name, for display only.")
    size = models.PositiveIntegerField(help_text="Bytes.")
    sha256 = models.CharField(max_length=64, db_index=True)
    content_type = models.CharField(max_length=100)
    encoding = models.CharField(max_length=40, blank=True)
    text = models.TextField()
    flags = models.JSONField(
        default=list,
        blank=True,
        help_text="Lines that address an AI rather than a reader: [{line, text}] (see battles.evidence).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.original_name


class BattleQuerySet(models.QuerySet["Battle"]):
    def abandoned(self) -> BattleQuerySet:
        """Running battles whose runner's lease has run out (it died, or handed them over)."""
        return self.filter(status=Battle.Status.RUNNING).filter(
            Q(lease_expires_at__lt=timezone.now()) | Q(lease_expires_at__isnull=True)
        )


class Battle(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"

    class Winner(models.TextChoices):
        AGGRESSOR = "aggressor", "Aggressor"
        DEFENDER = "defender", "Defender"
        DRAW = "draw", "Draw"

    class VerdictSource(models.TextChoices):
        STRUCTURED = "structured", "The Moderator's structured (JSON) verdict"
        TEXT = "text", "The Moderator's last turn"
        RULES = "rules", "Derived from the round scores"
        JURY = "jury", "The jury's majority"

    class Visibility(models.TextChoices):
        # Reachable only by its link: never listed, never indexed (see battles.visitors).
        UNLISTED = "unlisted", "Unlisted"
        PUBLIC = "public", "Public"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    document = models.ForeignKey(Document, on_delete=models.PROTECT, related_name="battles")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    rounds = models.PositiveSmallIntegerField()
    aggressor_model = models.CharField(max_length=200)
    defender_model = models.CharField(max_length=200)
    moderator_model = models.CharField(max_length=200)
    jury = models.JSONField(
        default=list, blank=True, help_text="The jurors' models (litellm model strings); empty: no jury."
    )

    winner = models.CharField(max_length=10, choices=Winner.choices, blank=True)
    aggressor_score = models.FloatField(null=True, blank=True)
    defender_score = models.FloatField(null=True, blank=True)
    summary = models.TextField(blank=True)
    verdict_fallback = models.BooleanField(
        default=False, help_text="The Moderator's verdict could not be parsed; it was derived instead."
    )
    verdict_source = models.CharField(
        max_length=10,
        choices=VerdictSource.choices,
        blank=True,
        help_text="Where the verdict was read from (see battles.engine.verdict).",
    )
    verdict_details = models.JSONField(
        default=dict,
        blank=True,
        help_text="The verdict event's evidence, jury, agreement and moderator (see battles.events).",
    )

    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="Empty when unknown."
    )
    error = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.UNLISTED, db_index=True
    )
    owner_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 of the owner's token (its browser's arena_owner cookie); empty: no owner.",
    )
    client_ip = models.GenericIPAddressField(
        null=True, blank=True, help_text="Who created it, for the per-client limit; empty from the terminal."
    )

    # The process running the battle holds a lease on it and renews it while it works; once the lease
    # has run out, any process may take the battle over (see `services.battle_take_over`).
    lease_owner = models.CharField(max_length=120, blank=True, help_text="The process running it.")
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    takeovers = models.PositiveSmallIntegerField(
        default=0, help_text="Times its runner stopped without handing it over (crashed, killed)."
    )

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = BattleQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rounds__gte=MIN_ROUNDS, rounds__lte=MAX_ROUNDS), name="battle_rounds_in_range"
            ),
        ]

    def __str__(self) -> str:
        return f"Battle {self.short_id} on {self.document.original_name}"

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]

    @property
    def is_public(self) -> bool:
        return self.visibility == self.Visibility.PUBLIC

    @property
    def is_over(self) -> bool:
        return self.status in (self.Status.FINISHED, self.Status.FAILED)

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None

    def model_for(self, role: str) -> str:
        model: str = getattr(self, f"{role}_model")
        return model


class Turn(models.Model):
    """One agent speaking once. `content` is complete once the turn is completed.

    A turn cut off by a crash or a handover is kept, interrupted, and starts again as a new row with
    the same index: at most one row per index is not interrupted.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        INTERRUPTED = "interrupted", "Interrupted"

    battle = models.ForeignKey(Battle, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveSmallIntegerField(help_text="1, 2, 3 … across the whole battle.")
    round = models.PositiveSmallIntegerField()
    role = models.CharField(max_length=10, choices=Role.choices)
    model = models.CharField(max_length=200)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    content = models.TextField(blank=True)
    citations = models.JSONField(
        default=list,
        blank=True,
        help_text="Its quotes checked against the document: [{quote, verified, start_line, end_line}].",
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["battle", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["battle", "index"],
                condition=~Q(status="interrupted"),
                name="turn_unique_live_index_per_battle",
            ),
        ]

    def __str__(self) -> str:
        return f"Turn {self.index} ({self.role}, round {self.round})"


class Event(models.Model):
    """The append-only log of a battle: the single source for the live stream, resume and replay.

    `seq` is 1, 2, 3 … per battle without gaps; it is the SSE `id:`.
    """

    battle = models.ForeignKey(Battle, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32)
    data = models.JSONField()
    offset_ms = models.PositiveIntegerField(help_text="Milliseconds since the battle started.")

    class Meta:
        ordering = ["battle", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["battle", "seq"], name="event_unique_seq_per_battle"),
            models.CheckConstraint(condition=Q(seq__gte=1), name="event_seq_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"

"""What the bridge holds of a rating until the platform answered it: the rating, when it
arrived, and every MQTT delivery of it to acknowledge then (SPEC §9). Nothing of it is
kept on disk: the broker delivers again what was not acknowledged."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.rating import RatingMessage

__all__ = ["Delivery", "Pending"]


@dataclass(slots=True)
class Delivery:
    """One MQTT delivery of a rating: what to acknowledge, and on which connection."""

    generation: int
    mid: int
    qos: int


@dataclass(slots=True)
class Pending:
    """A rating waiting for the platform, with every delivery of it seen meanwhile."""

    rating: RatingMessage
    since: float
    deliveries: list[Delivery] = field(default_factory=list)
    dispatched: bool = False
    failures: int = 0    # unexpected failures of batches it was in

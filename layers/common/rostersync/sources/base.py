"""The one interface every roster source implements.

A connector yields pages of *raw* OneRoster-shaped records (plain dicts, as
the source sent them, envelope removed) per entity. Validation and
normalization happen after staging, in the transform, so that every source
shares them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

Entity = Literal["orgs", "academicSessions", "classes", "users", "enrollments"]

# Fetch order: references point backwards, which keeps staged runs readable.
ENTITIES: tuple[Entity, ...] = ("orgs", "academicSessions", "classes", "users", "enrollments")


@dataclass(frozen=True)
class SourcePage:
    entity: Entity
    number: int  # 0-based, per entity
    records: list[dict]
    total: int | None = None  # total records of the entity, when the source says
    # Rows the connector could not even read as a record (a CSV line with the
    # wrong number of fields): {"entity", "sourcedId", "reason"} each; the
    # transform lists them with the run's rejected records.
    rejected: list[dict] = field(default_factory=list)


# A raw record may carry where it came from ("users.csv line 17"); rejection
# reasons then start with it. Normalization ignores the key.
SOURCE_LOCATION_KEY = "_source"


class Connector(Protocol):
    def pages(self, entity: Entity, since: datetime | None = None) -> Iterator[SourcePage]:
        """Yield every page of `entity`, or only records modified after `since`.

        Raises `rostersync.errors.SourceError` (naming URL and status) when the
        source cannot be read to the end, and `FilterNotSupportedError` when it
        refuses the `dateLastModified` filter.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class BundleSource(Protocol):
    """A source that delivers whole bundles (CSV): it says what kind of run the
    bundle makes, and which entities it holds completely."""

    def run_mode(self) -> Literal["full", "incremental"]:
        """`full` for a bulk bundle, `incremental` for a delta one."""
        ...

    def complete_entities(self) -> frozenset[Entity]:
        """Entities given in bulk: only these may lose records by absence."""
        ...

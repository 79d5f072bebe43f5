"""The one interface every roster source implements.

A connector yields pages of *raw* OneRoster-shaped records (plain dicts, as
the source sent them, envelope removed) per entity. Validation and
normalization happen after staging, in the transform, so that every source
shares them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

Entity = Literal["orgs", "academicSessions", "classes", "users", "enrollments"]

# Fetch order: references point backwards, which keeps staged runs readable.
ENTITIES: tuple[Entity, ...] = ("orgs", "academicSessions", "classes", "users", "enrollments")


# Where the next page of an entity starts, as a connector understands it: a
# small JSON object stored in a fetch checkpoint and handed back to the same
# kind of connector to resume (`{"page": 7, "offset": 700, "limit": 100}`, a
# Link next URL, ...). Every position holds `page`, the number of the next
# page; `{"page": n, "end": true}` says the entity has no page after n - 1.
Position = dict[str, Any]


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
    # Where the page after this one starts; None from a connector that cannot
    # say (the fetch then resumes with `{"page": number + 1}`). Bookkeeping, not
    # content: two pages with the same records are equal wherever they resume.
    resume: Position | None = field(default=None, compare=False)

    def next_position(self) -> Position:
        return self.resume if self.resume is not None else {"page": self.number + 1}


def start_page(start: Position | None) -> int:
    """The number of the first page to yield when resuming at `start` (0 from the beginning)."""
    return int(start.get("page", 0)) if start else 0


def resume_by_skipping(pages: Iterable[SourcePage], start: Position | None) -> Iterator[SourcePage]:
    """`pages` from `start` on, for a connector whose pages can only be re-read from the first.

    Pages before `start["page"]` are read and dropped (the source is read
    again up to there); each yielded page carries its resume position. One
    page is read ahead, so the last page says `end` and a fetch that stops
    right after it does not read the entity again only to find nothing.
    """
    if start is not None and start.get("end"):
        return
    first = start_page(start)
    held: SourcePage | None = None
    for page in pages:
        if page.number < first:
            continue
        if held is not None:
            yield replace(held, resume={"page": held.number + 1})
        held = page
    if held is not None:
        yield replace(held, resume={"page": held.number + 1, "end": True})


# A raw record may carry where it came from ("users.csv line 17"); rejection
# reasons then start with it. Normalization ignores the key.
SOURCE_LOCATION_KEY = "_source"


class Connector(Protocol):
    def pages(
        self, entity: Entity, since: datetime | None = None, start: Position | None = None
    ) -> Iterator[SourcePage]:
        """Yield every page of `entity`, or only records modified after `since`.

        With `start` (a page's `next_position()` from an earlier call with the
        same `since`, possibly by another process), yield only the pages from
        there on, numbered as they were: this is how a fetch continues in a new
        Lambda invocation. Page 0 is yielded even when empty, but a resumed
        entity may yield nothing (it had no page left).

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

"""Where a run's pages live in the staging bucket.

`staging/{districtId}/{runId}/{entity}/{page:06d}.json` per page and
`staging/{districtId}/{runId}/manifest.json` once the fetch is complete.
Uploaded CSV bundles arrive under `inbox/{districtId}/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rostersync.sources.base import ENTITIES

_PAGE = re.compile(r"^staging/(?P<d>[^/]+)/(?P<run>[^/]+)/(?P<entity>[A-Za-z]+)/(?P<n>\d{6})\.json$")


@dataclass(frozen=True)
class PageRef:
    district_id: str
    run_id: str
    entity: str
    number: int

    @property
    def key(self) -> str:
        return page_key(self.district_id, self.run_id, self.entity, self.number)

    @property
    def name(self) -> str:
        """The page's name within its run, as counted by the run record."""
        return f"{self.entity}/{self.number:06d}"


def page_key(district_id: str, run_id: str, entity: str, number: int) -> str:
    return f"staging/{district_id}/{run_id}/{entity}/{number:06d}.json"


def manifest_key(district_id: str, run_id: str) -> str:
    return f"staging/{district_id}/{run_id}/manifest.json"


def run_prefix(district_id: str, run_id: str) -> str:
    return f"staging/{district_id}/{run_id}/"


def parse_page_key(key: str) -> PageRef | None:
    """The page a key names, or None for anything else (the manifest, stray uploads)."""
    match = _PAGE.match(key)
    if not match or match["entity"] not in ENTITIES:
        return None
    return PageRef(match["d"], match["run"], match["entity"], int(match["n"]))

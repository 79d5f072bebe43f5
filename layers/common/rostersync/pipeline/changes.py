"""What a run changes in the product: planned first, then written (or only shown).

Planning compares the computed product state with the stored one, record by
record; a record whose stored form is unchanged is not written again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rostersync.roster.compute import ProductState
from rostersync.store import roster

KINDS = ("schools", "classes", "users", "enrollments")
SAMPLE_SIZE = 10


@dataclass
class KindPlan:
    kind: str
    creates: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    # Users are deactivated (a write of the inactive form), the rest deleted (an id).
    removals: list[Any] = field(default_factory=list)
    unchanged: int = 0
    active_before: int = 0

    def removal_ids(self) -> list[str]:
        return [r["id"] if isinstance(r, dict) else r for r in self.removals]

    def removal_sample(self) -> list[str]:
        """The lowest removal ids (the safeguard's sample)."""
        return sorted(self.removal_ids())[:SAMPLE_SIZE]

    def counts(self) -> dict[str, int]:
        return {
            "created": len(self.creates),
            "updated": len(self.updates),
            "deleted": len(self.removals),
            "unchanged": self.unchanged,
            "rejected": 0,
        }

    def samples(self) -> dict[str, list[str]]:
        return {
            "created": [d["id"] for d in self.creates[:SAMPLE_SIZE]],
            "updated": [d["id"] for d in self.updates[:SAMPLE_SIZE]],
            "deleted": self.removal_ids()[:SAMPLE_SIZE],
        }

    def write(self, district_id: str, *, deletions: bool) -> int:
        writes = self.creates + self.updates
        deletes: list[str] = []
        if deletions:
            if self.kind == "users":
                writes = writes + self.removals
            else:
                deletes = list(self.removals)
        return roster.write_product(district_id, self.kind, writes) + roster.delete_product(
            district_id, self.kind, deletes
        )


@dataclass
class ChangePlan:
    kinds: dict[str, KindPlan]

    def counts(self) -> dict[str, dict[str, int]]:
        return {kind: plan.counts() for kind, plan in self.kinds.items()}

    def samples(self) -> dict[str, dict[str, list[str]]]:
        return {kind: plan.samples() for kind, plan in self.kinds.items()}

    def write(self, district_id: str, *, deletions: bool) -> int:
        return sum(plan.write(district_id, deletions=deletions) for plan in self.kinds.values())


def _is_active(kind: str, item: dict[str, Any]) -> bool:
    return item.get("status") != "inactive" if kind == "users" else True


def plan_kind(district_id: str, kind: str, computed: dict[str, Any]) -> KindPlan:
    plan = KindPlan(kind)
    existing = {item["id"]: item for item in roster.iter_product(district_id, kind)}
    plan.active_before = sum(1 for item in existing.values() if _is_active(kind, item))
    for item_id in sorted(computed):
        doc = computed[item_id].model_dump(mode="json")
        old = existing.pop(item_id, None)
        if old is None:
            plan.creates.append(doc)
        elif old != doc:
            plan.updates.append(doc)
        else:
            plan.unchanged += 1
    # One product user per email: a user kept inactive gives up an email that
    # now belongs to another (a new sourcedId, or the winner of a duplicate).
    taken = {doc.email for doc in computed.values()} if kind == "users" else set()
    for item_id in sorted(existing):
        old = existing[item_id]
        if kind != "users":
            plan.removals.append(item_id)
            continue
        kept = {**old, "status": "inactive"}
        if old.get("email") in taken:
            kept["email"] = ""
        if old.get("status") != "inactive":
            # Kept, inactive, so the user's history returns with them.
            plan.removals.append(kept)
        elif kept != old:
            plan.updates.append(kept)
        else:
            plan.unchanged += 1
    return plan


def plan_changes(district_id: str, state: ProductState) -> ChangePlan:
    return ChangePlan({kind: plan_kind(district_id, kind, getattr(state, kind)) for kind in KINDS})

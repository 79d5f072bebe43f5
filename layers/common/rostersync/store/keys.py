"""Key layout of the single roster table (partition key `pk`, sort key `sk`).

| item                         | pk                              | sk                 |
|------------------------------|---------------------------------|--------------------|
| district (watermark, state)  | `DISTRICT#{d}`                  | `DISTRICT`         |
| last good settings           | `DISTRICT#{d}`                  | `SETTINGS`         |
| active-run lock              | `DISTRICT#{d}`                  | `LOCK`             |
| run record                   | `DISTRICT#{d}`                  | `RUN#{runId}`      |
| run's rejected records       | `RUN#{d}#{runId}`               | `ERR#{entity}#{id}`|
| run's warnings               | `RUN#{d}#{runId}`               | `WARN#{entity}#{id}#{n}` |
| run's processed pages        | `RUN#{d}#{runId}`               | `PAGE#{key}`       |
| direct push (status, expiry) | `DISTRICT#{d}`                  | `PUSH#{pushId}`    |
| a push's recorded pages      | `PUSH#{d}#{pushId}`             | `PAGE#{entity}#{page:06d}` |
| source mirror record         | `SRC#{d}#{entity}`              | `{sourcedId}`      |
| a dry run's source records   | `DRYSRC#{d}#{runId}#{entity}`   | `{sourcedId}`      |
| product school/class/user    | `{d}#SCHOOL` / `#CLASS` / `#USER` | `{id}`           |
| product enrollment           | `{d}#ENROLLMENT`                | `{sourcedId}`      |

Run ids sort by time, so `RUN#` items queried backwards are newest first.
GSI `ByEmail` (`gsi1pk` = `{d}#EMAIL`, `gsi1sk` = lower-cased email) finds a
product user by email. DynamoDB splits a hot partition by sort-key range, so
one partition per entity and district holds a million users.
"""

from __future__ import annotations


def district_pk(district_id: str) -> str:
    return f"DISTRICT#{district_id}"


DISTRICT_SK = "DISTRICT"
SETTINGS_SK = "SETTINGS"
LOCK_SK = "LOCK"


def run_sk(run_id: str) -> str:
    return f"RUN#{run_id}"


def run_detail_pk(district_id: str, run_id: str) -> str:
    return f"RUN#{district_id}#{run_id}"


def source_pk(district_id: str, entity: str) -> str:
    return f"SRC#{district_id}#{entity}"


def dry_run_source_pk(district_id: str, run_id: str, entity: str) -> str:
    """A dry run's records: kept apart so a preview never changes the mirror."""
    return f"DRYSRC#{district_id}#{run_id}#{entity}"


def product_pk(district_id: str, kind: str) -> str:
    """kind: SCHOOL, CLASS, USER or ENROLLMENT."""
    return f"{district_id}#{kind}"


def email_gsi_pk(district_id: str) -> str:
    return f"{district_id}#EMAIL"

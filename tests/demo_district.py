"""A district connected to the demo SIS, and its product read back: shared by the
integration tests that drive the handlers themselves (fetch and apply continuations,
the whole pipeline through the handlers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rostersync.local.demo import demo_settings
from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from rostersync.pipeline.changes import KINDS
from rostersync.settings.model import parse_settings
from rostersync.store import roster
from rostersync.store.settings import save_last_good


def connect_demo(aws_clients: Any, district_id: str, sis_url: str, *, page_size: int | None = None) -> None:
    """The district's settings (last good, as the settings function leaves them) and its
    credentials (a SecureString), pointing at the demo SIS at `sis_url`."""
    settings = demo_settings(sis_url)
    settings["source"]["credentialsParameter"] = f"/rostersync/districts/{district_id}/credentials"
    if page_size is not None:
        settings["source"]["pageSize"] = page_size
    aws_clients("ssm").put_parameter(
        Name=settings["source"]["credentialsParameter"],
        Type="SecureString",
        Value=json.dumps({"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}),
        Overwrite=True,
    )
    save_last_good(
        district_id, parse_settings(json.dumps(settings)), 1, parameter_modified_at=datetime.now(UTC)
    )


def product_of(district_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every product item of the district by kind, in id order, without index keys."""
    return {
        kind: sorted(
            (
                {k: v for k, v in item.items() if not k.startswith("gsi")}
                for item in roster.iter_product(district_id, kind)
            ),
            key=lambda item: item["id"],
        )
        for kind in KINDS
    }

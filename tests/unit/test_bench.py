"""The transform's fast paths (made for `make bench`) write exactly what the general path wrote."""

from __future__ import annotations

import itertools
import random
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import pytest

from rostersync.local.demo_data import ENTITY_NAMES, generate_district
from rostersync.pipeline.transform import mirror_doc, normalize_page
from rostersync.roster.models import Record, RecordError, _field_text, normalize


def general_mirror_doc(record: Record, run_id: str) -> tuple[str, str, str]:
    """mirror_doc as it was written first: the reference the fast path must match byte for byte."""
    import hashlib

    doc = orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.blake2b(doc.encode(), digest_size=12).hexdigest()
    dlm = record.dateLastModified.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if record.dateLastModified else ""
    return record.sourcedId, doc, f"{dlm}|{run_id}|{digest}"


def _create_table(client: Any) -> None:
    """Table "t" with the roster table's keys (pk, sk: strings)."""
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def test_mirror_doc_matches_the_general_path_on_the_demo_district() -> None:
    district = generate_district(schools=2, students_per_school=15, periods=3)
    seen = 0
    for entity in ENTITY_NAMES:
        records, _rejected = normalize_page(entity, district.records(entity), f"{entity}/000000")
        for record in records:
            assert mirror_doc(record, "RUN1") == general_mirror_doc(record, "RUN1")
            seen += 1
    assert seen > 150


@pytest.mark.parametrize("seed", range(4))
def test_mirror_doc_matches_on_odd_dates_and_text(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        moment = datetime(
            rng.choice([1, 999, 1000, 1970, 2026, 9999]),
            rng.randint(1, 12),
            rng.randint(1, 28),
            rng.randint(0, 23),
            rng.randint(0, 59),
            rng.randint(0, 59),
            rng.choice([0, 1, 120000, rng.randint(0, 999999)]),
        )
        stamp = moment.isoformat() + rng.choice(["Z", "+05:30", "-08:00", ""])
        begin = date(rng.choice([1, 2026]), 1, 1)
        raw = {
            "sourcedId": f"e-{rng.randint(0, 99)}",
            "status": rng.choice(["active", "tobedeleted", "inactive"]),
            "dateLastModified": rng.choice([stamp, None, ""]),
            "user": "u é\u0301",
            "class": {"sourcedId": "c\u202e1"},
            "role": "student",
            "primary": rng.choice([True, "false", None]),
            "beginDate": begin.isoformat(),
            "endDate": (begin + timedelta(days=rng.randint(0, 400))).isoformat(),
        }
        try:
            record = normalize("enrollments", raw)
        except RecordError:
            continue
        assert mirror_doc(record, "R") == general_mirror_doc(record, "R")


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "  padded  ",
        "tab\there",
        "line\nbreak",
        "nul\x00",
        "del\x7f",
        "é",
        "e\u0301",
        "x" * 256,
        "x" * 2000,
        "",
    ],
)
def test_field_text_fast_path_agrees_with_the_cleaning_path(value: str) -> None:
    """Printable ASCII takes a shortcut; anything else is cleaned as before. Same outcome."""
    for clean in (True, False):
        try:
            fast: object = _field_text({"k": value}, "k", clean=clean)
        except RecordError as error:
            fast = ("error", error.reason)
        # The cleaning path, forced by a non-ASCII sentinel that strip() removes.
        try:
            slow: object = _field_text({"k": value + "\u3000"}, "k", clean=clean)
        except RecordError as error:
            slow = ("error", error.reason)
        assert fast == slow


def test_the_bench_emulators_partition_query_pages_as_moto_does() -> None:
    """The bench's emulator reads one partition per Query page; the pages must be moto's own."""
    import boto3
    from moto import mock_aws
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    from rostersync.bench.emulator import partition_query

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _create_table(client)
        rng = random.Random(3)
        for n in range(150):
            pk = rng.choice(["A", "SRC#d#users", "SRC#d#users"])  # one partition over 1 MB: pages by size
            doc = "x" * rng.randint(1, 40000)
            client.put_item(
                TableName="t",
                Item={"pk": {"S": pk}, "sk": {"S": f"{rng.random():.6f}-{n}"}, "doc": {"S": doc}},
            )
        table = next(iter(dynamodb_backends.values()))["us-east-1"].get_table("t")
        fast = partition_query(Table.query)
        for pk, limit, forward in itertools.product(
            ("A", "SRC#d#users", "none"), (None, 1, 7), (True, False)
        ):
            start: dict | None = None
            while True:
                args = (DynamoType({"S": pk}), None, [], limit, start, forward, None)
                theirs = Table.query(table, *args)
                mine = fast(table, *args)
                assert [i.to_json() for i in mine[0]] == [i.to_json() for i in theirs[0]]
                assert mine[1:] == theirs[1:]
                if not theirs[2]:
                    break
                start = {k: v.to_json() for k, v in theirs[2].items()}


PLAIN_MOTO = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
"""


def test_the_bench_emulator_answers_reads_as_plain_moto_does() -> None:
    """Its fast read answers and partition queries give boto3 the same results as moto's own code."""
    import subprocess
    import sys

    import boto3

    from rostersync.bench.runner import Emulator

    bench = Emulator()
    plain = subprocess.Popen(
        [sys.executable, "-c", PLAIN_MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert plain.stdout is not None
        urls = [bench.url, f"http://127.0.0.1:{int(plain.stdout.readline())}"]
        clients = [
            boto3.client(
                "dynamodb",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="x",
                aws_secret_access_key="x",
            )
            for url in urls
        ]
        rng = random.Random(5)
        items = [
            {
                "pk": {"S": rng.choice(["SRC#d#users", "d#USER"])},
                "sk": {"S": f"u-{n:04d}"},
                "doc": {"S": "é\u202e" + "x" * rng.randint(0, 3000)},
                "n": {"N": str(rng.randint(-5, 5))},
                "ok": {"BOOL": rng.random() < 0.5},
                "none": {"NULL": True},
                "ids": {"L": [{"S": "a"}, {"N": "1.5"}]},
                "m": {"M": {"k": {"SS": ["x", "y"]}}},
            }
            for n in range(120)
        ]
        answers = []
        for client in clients:
            _create_table(client)
            for start in range(0, len(items), 25):
                client.batch_write_item(
                    RequestItems={"t": [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
                )
            got = []
            for pk in ("SRC#d#users", "d#USER", "nothing"):
                query = {"TableName": "t", "KeyConditionExpression": "pk = :pk", "Limit": 17}
                query["ExpressionAttributeValues"] = {":pk": {"S": pk}}
                while True:
                    page = client.query(**query)
                    page.pop("ResponseMetadata")
                    got.append(page)
                    if "LastEvaluatedKey" not in page:
                        break
                    query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            keys = [{"pk": i["pk"], "sk": i["sk"]} for i in items[:40]] + [
                {"pk": {"S": "no"}, "sk": {"S": "no"}}
            ]
            batch = client.batch_get_item(
                RequestItems={"t": {"Keys": keys, "ProjectionExpression": "sk, doc"}}
            )
            got.append(sorted(batch["Responses"]["t"], key=lambda i: i["sk"]["S"]))
            got.append(batch.get("UnprocessedKeys"))
            got.append(client.get_item(TableName="t", Key=keys[0]).get("Item"))
            got.append(client.get_item(TableName="t", Key=keys[-1]).get("Item"))
            answers.append(got)
        assert answers[0] == answers[1]
    finally:
        bench.stop()
        assert plain.stdin is not None
        plain.stdin.close()
        plain.wait(timeout=15)

"""The benchmark's AWS emulator: a moto server in a child process that counts item writes.

Run as `python -m rostersync.bench.emulator`. It prints its port, then answers
one-line commands on stdin until stdin closes:

- `stats`: a JSON line `{"writes": {kind: n}, "reads": {kind: n}, "rss_mb": float, "cpu_s": float}`;
- `reset`: zero the write counts.

Writes are counted in moto's DynamoDB backend, once per item that a PutItem,
UpdateItem, DeleteItem, BatchWriteItem entry or transaction entry actually
wrote (a failed condition writes nothing), by the kind of its partition key:
`mirror` (SRC#), `product` (a district's product records), `floor` (the
benchmark's own direct writes) and `bookkeeping` (runs, locks, pages, settings).

Three costs of moto that DynamoDB does not have are taken out, so that they are
not measured as the pipeline's (each keeps moto's answers; tests/unit/test_bench.py
compares them with a plain moto server): a Query page walks the whole table
(`partition_query`), and requests and answers of the bulk actions go through
a generic shape walker (`install_fast_requests`, `install_fast_read_answers`).
Everything else is moto as the embedded stack runs it.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

FLOOR_PREFIX = "BENCHFLOOR#"
_BOOKKEEPING_PREFIXES = ("DISTRICT#", "RUN#", "DRYSRC#", "PUSH#", "LOCK#")

writes: Counter[str] = Counter()
# Items read (returned by Query, GetItem and BatchGetItem), by the same kinds
reads: Counter[str] = Counter()
_lock = threading.Lock()


def kind_of(pk: str) -> str:
    if pk.startswith("SRC#"):
        return "mirror"
    if pk.startswith(FLOOR_PREFIX):
        return "floor"
    if pk.startswith(_BOOKKEEPING_PREFIXES) or "#" not in pk:
        return "bookkeeping"
    return "product"  # `{districtId}#{KIND}`


def _counted(method: Callable[..., Any], pk_of: Callable[[tuple[Any, ...]], Any]) -> Callable[..., Any]:
    def wrapper(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)  # raises (and counts nothing) when a condition fails
        pk = pk_of(args).get("pk", {}).get("S", "")
        with _lock:
            writes[kind_of(pk)] += 1
        return result

    return wrapper


def install_counters() -> None:
    # put_item(table, item_attrs, ...); update_item(table, key, ...); delete_item(table, key, ...)
    for name in ("put_item", "update_item", "delete_item"):
        setattr(DynamoDBBackend, name, _counted(getattr(DynamoDBBackend, name), lambda args: args[1]))
    original_get = DynamoDBBackend.get_item

    def get_item(
        self: DynamoDBBackend, table_name: str, keys: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        item = original_get(self, table_name, keys, *args, **kwargs)  # GetItem, and each key of a BatchGet
        if item is not None:
            with _lock:
                reads[kind_of(keys.get("pk", {}).get("S", ""))] += 1
        return item

    DynamoDBBackend.get_item = get_item  # type: ignore[method-assign]


def partition_query(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's Table.query, reading only the queried partition for a plain key query.

    moto answers every Query page by walking every item of the table, sorting
    the partition and stepping over the pages already returned with a Python
    comparator: one page costs O(table), so paging through a partition of N
    items costs O(N x table). DynamoDB reads a page in O(page). With a 400,000-
    item partition that artefact alone takes the emulator tens of minutes, and
    would be measured as the pipeline's time. So, for a query on the table's own
    keys with an equality on the partition key and nothing else but an optional
    filter or projection (what `store/` does), this reads the partition's items,
    sorts them by their string sort key and bisects to the start key; anything
    else goes to moto's own code. The pages are the same (tests/unit/test_bench.py).
    """
    import bisect
    import copy
    import inspect

    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import RESULT_SIZE_LIMIT

    signature = inspect.signature(original)

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        a = call.arguments
        plain = (
            a["hash_key"] is not None
            and a["index_name"] is None
            and a["range_comparison"] is None
            and not a["filter_kwargs"]
            and not a["range_key_conditions"]
            and len(a["hash_key_conditions"] or ()) <= 1
            and self.range_key_attr is not None
            and self.range_key_type == "S"
        )
        if not plain:
            return original(self, *args, **kwargs)
        partition = self.items.get(a["hash_key"]) or {}
        items = sorted(partition.values(), key=lambda item: item.range_key.value)
        forward = a["scan_index_forward"] is not False
        if not forward:
            items.reverse()
        start = 0
        if a["exclusive_start_key"]:
            after = DynamoType(a["exclusive_start_key"][self.range_key_attr]).value
            keys = [item.range_key.value for item in items]
            if forward:
                start = bisect.bisect_right(keys, after)
            else:  # descending keys: skip those >= the start key
                start = len(keys) - bisect.bisect_left(keys[::-1], after)
        results: list[Any] = []
        size = 0
        last_key = None
        limit = a["limit"]
        for item in items[start:]:
            if len(results) == limit or size + item.size() > RESULT_SIZE_LIMIT:
                last_key = self._get_last_evaluated_key(results[-1], None)
                break
            results.append(item)
            size += item.size()
        scanned = len(results)
        with _lock:
            reads[kind_of(str(a["hash_key"].value))] += scanned
        results = copy.deepcopy(results)
        if a["filter_expression"] is not None:
            results = [item for item in results if a["filter_expression"].expr(item)]
        if a["projection_expressions"]:
            results = [item.project(a["projection_expressions"]) for item in results]
        return results, scanned, last_key

    return query


def install_partition_query() -> None:
    from moto.dynamodb.models.table import Table

    Table.query = partition_query(Table.query)  # type: ignore[method-assign]


# Reads whose answers are plain DynamoDB JSON: items of S/N/BOOL/NULL/M/L values.
_FAST_ANSWERS = frozenset({"Query", "BatchGetItem", "GetItem", "Scan"})


def install_fast_read_answers() -> None:
    """Answer reads with `json.dumps` of the result instead of moto's generic serializer.

    moto 5 walks the botocore shape model attribute by attribute to write every
    answer; for a Query page of a few thousand items that costs more CPU than
    everything else the emulator does, and DynamoDB has no such cost. The result
    dict is already DynamoDB JSON (moto builds it with `dynamo_to_dict`); anything
    json cannot write (binary values) and every error takes moto's own path.
    """
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.serialized

    def serialized(self: Any, action_result: Any) -> Any:
        if self._get_action() in _FAST_ANSWERS and not isinstance(action_result.result, Exception):
            try:
                body = json.dumps(action_result.result, separators=(",", ":"))
            except TypeError:
                return original(self, action_result)
            headers = {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}
            return 200, headers, body
        return original(self, action_result)

    DynamoHandler.serialized = serialized  # type: ignore[method-assign]


# Requests whose bodies are plain DynamoDB JSON (no binary values to decode).
_FAST_REQUESTS = frozenset({"BatchWriteItem", "BatchGetItem", "Query", "GetItem"})


def install_fast_requests() -> None:
    """Read the bulk requests' bodies with `json.loads` instead of moto's generic parser.

    moto 5 parses every request by walking the botocore shape model; on batch
    writes that takes four times the CPU of storing the items. For these four
    actions the body is already what the handler reads, except binary (`B`,
    `BS`) values, which the generic parser decodes: a body with any goes to it.
    """
    from moto.core.request import normalize_request
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.parse_parameters

    def parse_parameters(self: Any, request: Any) -> None:
        if self._get_action() in _FAST_REQUESTS:
            data = normalize_request(request).data or b"{}"
            raw = data if isinstance(data, bytes) else str(data).encode()
            if b'"B"' not in raw and b'"BS"' not in raw:
                self.params = json.loads(raw)
                return
        original(self, request)

    DynamoHandler.parse_parameters = parse_parameters  # type: ignore[method-assign]


def rss_mb() -> float:
    """Current resident set size (not the peak): what the emulator holds now."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    install_counters()
    install_partition_query()
    install_fast_read_answers()
    install_fast_requests()
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "reset":
            with _lock:
                writes.clear()
                reads.clear()
            print("{}", flush=True)
        elif command == "stats":
            with _lock:
                counts, read = dict(writes), dict(reads)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu_s = usage.ru_utime + usage.ru_stime
            print(
                json.dumps({"writes": counts, "reads": read, "rss_mb": rss_mb(), "cpu_s": cpu_s}), flush=True
            )
    server.stop()


if __name__ == "__main__":
    main()

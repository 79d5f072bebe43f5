"""One function of the pipeline in its own process, as a warm Lambda container runs it.

Run as `python -m rostersync.bench.worker FUNCTION_DIR QUEUE_URL [--batch N] [--partial]`
with the stack's environment (AWS_ENDPOINT_URL and the template's Outputs). It
polls the queue with the template's event-source mapping (the embedded stack's
own `QueuePoller`) and prints one JSON line per invocation:
`{"function", "start", "end", "cpu_s", "messages", "peak_rss_mb"}`: wall-clock
start and end, the process's CPU time in the invocation, and its peak resident
set (VmHWM), which is what Lambda reports as "Max Memory Used" for a
container. It stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from rostersync.bench.rss import peak_rss_mb
from rostersync.local.functions import load_handler
from rostersync.local.wiring import QueuePoller


class MeasuredPoller(QueuePoller):
    """The embedded stack's poller, timing each invocation of the handler."""

    def _deliver(self, sqs: Any, arn: str, messages: list[dict[str, Any]]) -> None:
        start, cpu = time.time(), time.process_time()
        super()._deliver(sqs, arn, messages)
        report = {
            "function": self.function_name,
            "start": start,
            "end": time.time(),
            "cpu_s": round(time.process_time() - cpu, 4),
            "messages": len(messages),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        print(json.dumps(report), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rostersync.bench.worker")
    parser.add_argument("function_dir")
    parser.add_argument("queue_url")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--partial", action="store_true")
    parser.add_argument("--visibility-timeout", type=int, default=900)
    args = parser.parse_args(argv)

    stop = threading.Event()
    poller = MeasuredPoller(
        args.function_dir,
        args.queue_url,
        load_handler(args.function_dir),
        batch_size=args.batch,
        partial_failures=args.partial,
        stop=stop,
        visibility_timeout_s=args.visibility_timeout,
    )

    def watch_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes the pipe (or dies)
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(
        json.dumps({"function": args.function_dir, "ready": True, "peak_rss_mb": peak_rss_mb()}), flush=True
    )
    poller.run()  # in this thread: the process is the container
    return 0


if __name__ == "__main__":
    sys.exit(main())

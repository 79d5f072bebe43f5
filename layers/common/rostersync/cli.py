"""The `rostersync` command: the embedded stack and the demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def _quiet_logs() -> None:
    # The demo prints its own summary; keep the stack's JSON logs for `local up`.
    import os

    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # Each run's EMF metrics line is for CloudWatch, not for the demo's reader.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def cmd_local_up(args: argparse.Namespace) -> int:
    from rostersync.local.stack import LocalStack

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    stack = LocalStack(port=args.port, aws_port=args.aws_port, demo_sis=not args.no_demo_sis).start()
    outputs = stack.local_outputs()
    sis = f" demo-sis={outputs['DemoSisUrl']}" if "DemoSisUrl" in outputs else ""
    print(f"rostersync local stack ready: api={stack.api_url} aws={stack.aws_url}{sis}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    stack.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _quiet_logs()
    from rostersync.local.demo import DemoError, run_demo
    from rostersync.local.stack import LocalStack

    print("starting the embedded stack (moto server, template.yaml, demo SIS)...", flush=True)
    with LocalStack(port=0, aws_port=0) as stack:
        try:
            source = args.source or ("rest-1.2" if args.version == "1.2" else "rest")
            run_demo(stack.api_url, stack.aws_url, stack.sis.url, source=source)
        except DemoError as error:
            print(f"demo failed: {error}", file=sys.stderr)
            return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _quiet_logs()
    from pathlib import Path

    from rostersync.bench.runner import options_from_env, run_bench

    overrides: dict[str, object] = {"page_size": args.page_size, "latency_s": args.latency_ms / 1000}
    overrides |= {"transform_workers": args.transform_workers, "out": Path(args.out)}
    overrides |= {"engine_users": args.engine_users, "engine_xl_users": args.engine_xl_users}
    if args.sizes:
        overrides["sizes"] = tuple(s.strip().upper() for s in args.sizes.split(",") if s.strip())
    run_bench(options_from_env(**overrides), say=lambda text: print(text, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rostersync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="the embedded stack")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    up = local_commands.add_parser("up", help="run the embedded stack in the foreground")
    up.add_argument("--port", type=int, default=3000, help="HTTP API port (default 3000)")
    up.add_argument("--aws-port", type=int, default=5000, help="AWS emulator port (default 5000)")
    up.add_argument("--no-demo-sis", action="store_true", help="do not start the built-in demo SIS")
    up.set_defaults(func=cmd_local_up)

    demo = commands.add_parser("demo", help="sync the demo district through the whole pipeline")
    demo.add_argument(
        "--source",
        choices=("rest", "rest-1.2", "csv", "powerschool", "direct"),
        help="where the demo district comes from (default rest: OneRoster 1.1 REST)",
    )
    demo.add_argument("--version", choices=("1.1", "1.2"), default="1.1", help="OneRoster REST version")
    demo.set_defaults(func=cmd_demo)

    bench = commands.add_parser("bench", help="measure the pipeline (docs/benchmarks.md)")
    bench.add_argument("--sizes", help="comma-separated of T, S, M, XL (default: $BENCH_SIZES or S,M)")
    bench.add_argument("--page-size", type=int, default=1000, help="source page size (default 1000)")
    bench.add_argument("--latency-ms", type=float, default=0.0, help="demo SIS latency per page in the syncs")
    bench.add_argument("--transform-workers", type=int, default=2, help="transform processes (default 2)")
    bench.add_argument(
        "--engine-users",
        type=int,
        default=50_000,
        help="users of the side-by-side apply engine run (0: skip)",
    )
    bench.add_argument(
        "--engine-xl-users", type=int, default=1_000_000, help="users of the XL apply engine run (0: skip)"
    )
    bench.add_argument("--out", default="bench-results.json", help="results file")
    bench.set_defaults(func=cmd_bench)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

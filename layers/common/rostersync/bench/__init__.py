"""`make bench`: the pipeline's speed and memory on synthetic districts (docs/benchmarks.md).

- `emulator`: the AWS emulator (moto server) in a child process that also
  counts DynamoDB item writes by kind, so write counts are measured where the
  writes land, not inferred from the code that makes them.
- `worker`: one child process per function, polling its queue as a warm Lambda
  container does and reporting every invocation's duration and its peak RSS.
- `runner`: builds the districts, serves them from the demo SIS over HTTP, drives
  the runs, measures the floors and writes `bench-results.json`.
"""

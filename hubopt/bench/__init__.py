"""Benchmark harness: runner, records, reports and the CLI."""

"""Benchmarks run against the release build; each group pits the Rust core against what a user would pick."""

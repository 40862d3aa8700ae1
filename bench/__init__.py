"""Benchmarks of rungflow: search efficiency on LCBench and orchestration overhead; run ``python -m bench --help``."""

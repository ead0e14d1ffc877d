"""Benchmarks run only through `make bench` (GUARDMESH_BENCH=1), never in `make test`."""

import os

if os.environ.get("GUARDMESH_BENCH") != "1":
    collect_ignore_glob = ["*.py"]

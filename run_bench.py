#!/usr/bin/env python
"""Benchmark attention backends across sequence lengths. ``python run_bench.py --help``."""

import sys

from harness.cli.app import main

if __name__ == "__main__":
    sys.exit(main())

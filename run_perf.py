#!/usr/bin/env python3
"""Rankflow command line: python run_perf.py --hardware_config H.yaml --model_config M.yaml."""

import sys

from rankflow.cli import main

if __name__ == "__main__":
    sys.exit(main())

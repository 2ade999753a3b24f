"""`rankflow models` and `rankflow hardware`: the shipped configs as a table, or as JSON with --json."""

from __future__ import annotations

import argparse
import json
import sys

from rankflow import listing
from rankflow.cli import _Parser

SCHEMA = {"models": "rankflow.models", "hardware": "rankflow.hardware"}
VERSION = "1.1"  # 1.1: schema_version beside version, as every other document has it


def document(kind: str) -> dict:
    """The JSON both the CLI and GET /v1/<kind> return."""
    rows = listing.model_rows() if kind == "models" else listing.hardware_rows()
    return {"schema": SCHEMA[kind], "schema_version": VERSION, "version": VERSION, kind: rows}


def run(kind: str, argv: list[str]) -> int:
    ap: argparse.ArgumentParser = _Parser(prog=f"rankflow {kind}",
                                          description=f"List the shipped {kind} with their key numbers.")
    ap.add_argument("--json", action="store_true", help="print JSON (schema in README) instead of a table")
    args = ap.parse_args(argv)
    if args.json:
        sys.stdout.write(json.dumps(document(kind), indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(listing.models_text() if kind == "models" else listing.hardware_text())
    return 0

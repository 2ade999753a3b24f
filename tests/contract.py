"""The bad-input contract, checked the same way by every hostile test: exit 0 with finite numbers in
every output, or exit 2 with one line on stderr and nothing written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rankflow.cli import main


def cli(capsys, *args, cwd: Path | None = None) -> tuple[int, str, str]:
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        rc = main([str(a) for a in args])
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return rc, out, err


def finite(doc) -> bool:
    if isinstance(doc, dict):
        return all(finite(v) for v in doc.values())
    if isinstance(doc, list):
        return all(finite(v) for v in doc)
    return not isinstance(doc, float) or math.isfinite(doc)


def assert_contract(rc: int, err: str, outputs: list[Path]) -> None:
    """Exit 0 with finite numbers in every output, or exit 2 with one line and nothing written."""
    assert "Traceback" not in err
    if rc == 0:
        for p in outputs:
            if p.suffix == ".json" and p.exists():
                assert finite(json.loads(p.read_text()))
        return
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rankflow: error:") and "fix:" in lines[0], err
    assert not any(p.exists() for p in outputs)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path

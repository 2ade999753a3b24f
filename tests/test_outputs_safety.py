"""Outputs under hostile conditions: one failing output leaves no other, a full disk or a file in the way
names the path and leaves nothing half written, special files are never replaced, and what is written
gets the usual permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.contract import assert_contract, cli
from tests.helpers import ROOT

HW = ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml"
MODEL = ROOT / "model_configs" / "llama2-7b.yaml"
SMALL = ["--set", "model.layers=2", "--set", "workload.global_batch=8"]


OUTPUT_FAILURES = [
    (["--json", "r.json", "--trace", "missing/t.json"], "missing"),
    (["--json", "r.json", "--chakra-out", "afile"], "afile"),
    (["--json", "afile/sub/r.json"], "afile/sub"),
    (["--json", "r.json", "--graph", "missing/g"], "missing"),
]


@pytest.mark.parametrize("flags,named", OUTPUT_FAILURES)
def test_one_failing_output_leaves_no_other(capsys, tmp_path, flags, named):
    (tmp_path / "afile").write_text("")
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, *flags, cwd=tmp_path)
    assert rc == 2 and named in err and ".tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_full_disk_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    from graphgen.errors import RankflowError
    from rankflow import outputs

    real = outputs._stage_file
    calls = []

    def full(path, data, mode):
        calls.append(path)
        if len(calls) == 2:
            raise outputs._fail(path, OSError(28, "No space left on device"))
        return real(path, data, mode)

    monkeypatch.setattr(outputs, "_stage_file", full)
    out = outputs.OutputSet()
    out.add(str(tmp_path / "a.json"), lambda: "{}")
    out.add(str(tmp_path / "b.json"), lambda: "{}")
    with pytest.raises(RankflowError, match="b.json.*No space left") as exc:
        out.commit()
    assert ".tmp" not in exc.value.one_line()
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_usual_permissions(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, "--json", "r.json",
                         "--trace", "t.json", "--graph", "g", "--chakra-out", "et", "--quiet", cwd=tmp_path)
    finally:
        os.umask(old)
    assert rc == 0, err
    files = [tmp_path / n for n in ("r.json", "t.json", "g.dot", "g.html")] + list((tmp_path / "et").iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files)
    assert stat.S_IMODE((tmp_path / "et").stat().st_mode) == 0o755


def test_a_move_failing_half_way_puts_every_earlier_output_back(tmp_path, monkeypatch):
    """The set is all or nothing even when the last move fails: files already moved in are removed,
    files they replaced are restored, directories made for a directory output are removed."""
    from graphgen.errors import RankflowError
    from rankflow import outputs

    (tmp_path / "b.json").write_text("old")
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("et"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", failing)
    out = outputs.OutputSet()
    out.add(str(tmp_path / "a.json"), lambda: "new")
    out.add(str(tmp_path / "b.json"), lambda: "new")
    out.add_dir(str(tmp_path / "x" / "y" / "et"), lambda: [("f", b"data")])
    with pytest.raises(RankflowError, match="et.*No space left"):
        out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
    assert (tmp_path / "b.json").read_text() == "old"


def test_a_file_in_the_way_inside_an_existing_trace_directory_restores_the_json(capsys, tmp_path):
    (tmp_path / "et" / "rankflow.0.et").mkdir(parents=True)
    (tmp_path / "r.json").write_text("old")
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, "--json", "r.json",
                     "--chakra-out", "et", "--quiet", cwd=tmp_path)
    assert_contract(rc, err, [])
    assert rc == 2 and "rankflow.0.et" in err
    assert (tmp_path / "r.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["et", "r.json"]
    assert [p.name for p in (tmp_path / "et").iterdir()] == ["rankflow.0.et"]


@pytest.mark.parametrize("flags", [["--json", "et/r.json", "--chakra-out", "et"],
                                   ["--graph", "et/g", "--chakra-out", "et"],
                                   ["--json", "r.json", "--trace", "here/r.json"]])
def test_nested_or_aliased_outputs_are_refused(capsys, tmp_path, flags):
    (tmp_path / "et").mkdir()
    (tmp_path / "here").symlink_to(".")
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, *flags, "--quiet",
                     cwd=tmp_path)
    assert_contract(rc, err, [])
    assert rc == 2 and ("inside" in err or "same path" in err)
    if "inside" in err:
        assert "et/" in err and "output et" in err  # both paths named
    assert sorted(p.name for p in tmp_path.iterdir()) == ["et", "here"] and not list((tmp_path / "et").iterdir())


def test_special_files_are_never_replaced(capsys, tmp_path):
    """A FIFO or a symbolic link at an output path is refused (a regular file is replaced); a device
    is refused before anything is written."""
    from graphgen.errors import RankflowError
    from rankflow.outputs import OutputSet

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "elsewhere.json").write_text("keep")
    (tmp_path / "link.json").symlink_to(tmp_path / "elsewhere.json")
    for path in ("fifo", "link.json"):
        rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, "--json", path, "--quiet",
                         cwd=tmp_path)
        assert_contract(rc, err, [])
        assert rc == 2 and path in err and "not a regular file" in err
    assert stat.S_ISFIFO((tmp_path / "fifo").lstat().st_mode) and (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "elsewhere.json").read_text() == "keep"
    out = OutputSet()
    out.add("/dev/null", lambda: "x")
    with pytest.raises(RankflowError, match="/dev/null.*not a regular file"):
        out.check()  # check only: a commit must never be tried on a device
    (tmp_path / "r.json").write_text("old")
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, "--json", "r.json", "--quiet",
                     cwd=tmp_path)
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["gpus"] == 8


def test_an_output_over_a_file_the_run_read_is_refused(capsys, tmp_path):
    # --json M.yaml replaced the model config the run had just read with the result document.
    model = tmp_path / "m.yaml"
    model.write_text(MODEL.read_text())
    link = tmp_path / "link.yaml"
    link.symlink_to(model)
    for target in (model, tmp_path / "." / "m.yaml"):
        rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", link, *SMALL, "--json", target)
        assert rc == 2 and "input of this run" in err and err.count("\n") == 1
    assert model.read_text() == MODEL.read_text()

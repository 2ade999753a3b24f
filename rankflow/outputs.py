"""Writing a run's outputs all together or not at all.

Every output is staged in a temporary file (or, for a trace set, a temporary directory) beside its
target; only when all are staged are they moved into place. A failure anywhere (a missing
directory, a read-only path, a full disk) removes every staged file and names the path as the
user wrote it. Files get the usual permissions (0666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from graphgen.errors import RankflowError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fail(path: str, exc: OSError, what: str = "cannot write") -> RankflowError:
    return RankflowError(f"{what}: {exc.strerror or exc}", file=path, fix="choose a writable path with free space")


class OutputSet:
    def __init__(self) -> None:
        self._files: list[tuple[str, Callable[[], bytes]]] = []
        self._dirs: list[tuple[str, Callable[[], Iterable[tuple[str, bytes]]]]] = []

    def add(self, path: str, render: Callable[[], str | bytes]) -> None:
        """A file whose content `render` produces when the set is committed."""
        self._files.append((path, lambda: _as_bytes(render())))

    def add_dir(self, path: str, files: Callable[[], Iterable[tuple[str, bytes]]]) -> None:
        """A directory of files (created if missing; existing files of the same names are replaced)."""
        self._dirs.append((path, files))

    def paths(self) -> list[str]:
        return [p for p, _ in self._files] + [p for p, _ in self._dirs]

    def check(self) -> None:
        """Refuse before any work is done: a file target's directory must exist, and no two
        outputs may share a path."""
        seen: set[str] = set()
        for path in self.paths():
            key = os.path.abspath(path)
            if key in seen:
                raise RankflowError("two outputs are written to the same path", file=path,
                                    fix="give each output its own path")
            seen.add(key)
        for path, _ in self._files:
            target = Path(path)
            if not path or path.endswith(os.sep) or target.is_dir():
                raise RankflowError("is a directory or empty, not a file path", file=path or "''",
                                    fix="give a file path")
            if not target.parent.is_dir():
                raise RankflowError("output directory does not exist", file=str(target.parent),
                                    fix="create it or choose another path")
        for path, _ in self._dirs:
            if Path(path).exists() and not Path(path).is_dir():
                raise RankflowError("exists and is not a directory", file=path, fix="choose a directory path")

    def commit(self) -> None:
        self.check()
        mode = 0o666 & ~_umask()
        staged: list[tuple[str, str, bool]] = []  # (temporary path, target, is a directory)
        try:
            for path, render in self._files:
                staged.append((_stage_file(path, render(), mode), path, False))
            for path, files in self._dirs:
                staged.append((_stage_dir(path, files(), mode), path, True))
            for tmp, path, is_dir in staged:
                _move(tmp, path, is_dir)
        except BaseException:
            for tmp, _, is_dir in staged:
                shutil.rmtree(tmp, ignore_errors=True) if is_dir else Path(tmp).unlink(missing_ok=True)
            raise


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content


def _stage_file(path: str, data: bytes, mode: int) -> str:
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise _fail(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _fail(path, exc) from None
    return tmp


def _stage_dir(path: str, files: Iterable[tuple[str, bytes]], mode: int) -> str:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        parent = target if target.is_dir() else target.parent
        tmp = tempfile.mkdtemp(dir=parent, prefix=".rankflow-")
    except OSError as exc:
        raise _fail(path, exc) from None
    try:
        for name, data in files:
            (Path(tmp) / name).write_bytes(data)
            os.chmod(Path(tmp) / name, mode)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _fail(path, exc) from None
    return tmp


def _move(tmp: str, path: str, is_dir: bool) -> None:
    try:
        if not is_dir:
            os.replace(tmp, path)
        elif not Path(path).exists():
            os.chmod(tmp, 0o777 & ~_umask())
            os.replace(tmp, path)
        else:
            for f in sorted(Path(tmp).iterdir()):
                os.replace(f, Path(path) / f.name)
            os.rmdir(tmp)
    except OSError as exc:
        raise _fail(path, exc) from None

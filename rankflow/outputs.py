"""Writing a run's outputs all together or not at all.

Every output is staged in a temporary file (or, for a trace set, a temporary directory) beside its
target; only when all are staged are they moved into place. A failure anywhere (a missing
directory, a read-only path, a full disk, a move that fails half way through the set) removes
every staged file, puts back every file already replaced and names the path as the user wrote it.
Only regular files are replaced: a device (/dev/null), a FIFO, a socket or a symbolic link at a
target is refused, and so are outputs nested in one another. Files get the usual permissions
(0666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from graphgen.errors import RankflowError
from rankflow.files import was_read


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
        """Refuse before any work is done: a file target's directory must exist, an existing target
        must be a regular file (a directory for a directory output), and no output may share a path
        with another or lie inside another."""
        _check_distinct(self.paths())
        for path, _ in self._files:
            target = Path(path)
            if not path or path.endswith(os.sep) or target.is_dir():
                raise RankflowError("is a directory or empty, not a file path", file=path or "''",
                                    fix="give a file path")
            _check_regular(path)
            if was_read(path):  # `--json M.yaml` replaced the model config it had just read
                raise RankflowError("is an input of this run; the output would replace it", file=path,
                                    fix="choose another output path")
            if not target.parent.is_dir():
                raise RankflowError("output directory does not exist", file=str(target.parent),
                                    fix="create it or choose another path")
        for path, _ in self._dirs:
            if os.path.lexists(path) and not Path(path).is_dir():
                raise RankflowError("exists and is not a directory", file=path, fix="choose a directory path")

    def commit(self) -> None:
        self.check()
        mode = 0o666 & ~_umask()
        staged: list[tuple[str, str, bool]] = []  # (temporary path, target, is a directory)
        made: list[Path] = []  # directories created for a directory output, outermost first
        moves = _Moves()
        try:
            for path, render in self._files:
                staged.append((_stage_file(path, render(), mode), path, False))
            for path, files in self._dirs:
                staged.append((_stage_dir(path, files(), mode, made), path, True))
            for tmp, path, is_dir in staged:
                moves.move_dir(tmp, path) if is_dir else moves.move_file(tmp, path)
        except BaseException:
            moves.undo()
            for tmp, _, is_dir in staged:
                shutil.rmtree(tmp, ignore_errors=True) if is_dir else Path(tmp).unlink(missing_ok=True)
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only if empty: nothing but what this run created is removed
            raise
        moves.done()


def _check_distinct(paths: list[str]) -> None:
    """No two outputs on one path, and none inside another (a --json inside the --chakra-out
    directory): resolved through symbolic links, so two spellings of one place collide too."""
    keys = [(path, Path(os.path.realpath(path))) for path in paths if path]
    for i, (path, key) in enumerate(keys):
        for other, other_key in keys[:i]:
            if key == other_key:
                raise RankflowError("two outputs are written to the same path", file=path,
                                    fix="give each output its own path")
            if other_key in key.parents or key in other_key.parents:
                inner, outer = (path, other) if other_key in key.parents else (other, path)
                raise RankflowError(f"output {inner} lies inside output {outer}", file=inner,
                                    fix="give each output a path outside the others")


def _check_regular(path: str) -> None:
    """An existing file target must be a regular file: replacing a device, a FIFO, a socket or a
    symbolic link (which would be swapped for a file, not written through) is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _fail(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) \
            else "a device, FIFO or socket"
        raise RankflowError(f"exists and is {kind}, not a regular file", file=path,
                            fix="choose a new path or one of a regular file")


class _Moves:
    """Moves staged files into place, keeping what each replaced (a hard link beside it) until the
    whole set is in place, so that a failure half way puts every earlier target back."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._backups: list[Path] = []

    def move_file(self, tmp: str | Path, path: str | Path, shown: str | None = None) -> None:
        shown = shown or str(path)
        _check_regular(str(path))
        backup = self._backup(Path(path), shown)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _fail(shown, exc) from None
        self._undo.append(lambda: os.replace(backup, path) if backup else Path(path).unlink(missing_ok=True))

    def move_dir(self, tmp: str, path: str) -> None:
        if not os.path.lexists(path):
            try:
                os.chmod(tmp, 0o777 & ~_umask())
                os.replace(tmp, path)
            except OSError as exc:
                raise _fail(path, exc) from None
            self._undo.append(lambda: shutil.rmtree(path, ignore_errors=True))
            return
        for f in sorted(Path(tmp).iterdir()):
            self.move_file(f, Path(path) / f.name, path)
        try:
            os.rmdir(tmp)
        except OSError as exc:
            raise _fail(path, exc) from None

    def _backup(self, target: Path, shown: str) -> Path | None:
        if not target.exists():
            return None
        backup = target.with_name(f".{target.name}.{secrets.token_hex(4)}.bak")
        try:
            try:
                os.link(target, backup)
            except OSError:  # a file system without hard links: a copy keeps the content
                shutil.copy2(target, backup)
        except OSError as exc:
            backup.unlink(missing_ok=True)
            raise _fail(shown, exc) from None
        self._backups.append(backup)
        return backup

    def undo(self) -> None:
        for step in reversed(self._undo):
            try:
                step()
            except OSError:
                pass  # best effort: the error already raised names the path that failed
        self._undo.clear()
        self.done()

    def done(self) -> None:
        for backup in self._backups:
            backup.unlink(missing_ok=True)
        self._backups.clear()


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


def _stage_dir(path: str, files: Iterable[tuple[str, bytes]], mode: int, made: list[Path]) -> str:
    """A temporary directory holding the files, beside or inside the target; the target's missing
    parents are created (and appended to `made`, to be removed if the set fails)."""
    target = Path(path)
    made.extend(reversed([d for d in target.absolute().parents if not d.exists()]))
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

"""How every command refuses: exit status 2 and one line on stderr naming the file, the field and the fix,
never a traceback (RankflowError from anywhere below; an OSError the I/O layer did not translate)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from graphgen.errors import RankflowError


def refusing(prog: str, command: Callable[[], int]) -> int:
    try:
        return command()
    except RankflowError as exc:
        sys.stderr.write(f"{prog}: error: {exc.one_line()}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"{prog}: error: {exc.filename or ''}: {exc.strerror} (fix: check the path and "
                         "permissions)\n")
        return 2

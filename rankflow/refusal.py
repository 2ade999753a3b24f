"""How every command refuses: exit status 2 and one line on stderr naming the file, the field and the fix,
never a traceback (RankflowError from anywhere below; an OSError the I/O layer did not translate)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

from graphgen.errors import RankflowError
from rankflow.files import recording_inputs


def _terminated(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so temporary directories and child processes are cleaned up
    raise KeyboardInterrupt


def refusing(prog: str, command: Callable[[], int]) -> int:
    # signal handlers can only be set from the main thread (the server runs commands in workers)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
    try:
        with recording_inputs():
            return command()
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except RankflowError as exc:
        sys.stderr.write(f"{prog}: error: {exc.one_line()}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"{prog}: error: {exc.filename or ''}: {exc.strerror} (fix: check the path and "
                         "permissions)\n")
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

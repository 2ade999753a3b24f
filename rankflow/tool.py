"""The `rankflow` command: `rankflow search|sweep|recommend|serve ...`, and with anything else the simulator of
run_perf.py (`rankflow --hardware_config H.yaml --model_config M.yaml`)."""

from __future__ import annotations

import sys

from graphgen.errors import RankflowError

COMMANDS = ("search", "sweep", "recommend", "serve")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in COMMANDS:
        from rankflow import search_cli

        try:
            return search_cli.run(args[0], args[1:])
        except RankflowError as exc:
            sys.stderr.write(f"rankflow {args[0]}: error: {exc.one_line()}\n")
            return 2
        except OSError as exc:
            sys.stderr.write(f"rankflow {args[0]}: error: {exc.filename or ''}: {exc.strerror} (fix: check the path "
                             "and permissions)\n")
            return 2
    from rankflow import cli

    return cli.main(args if argv is not None else None)


if __name__ == "__main__":
    sys.exit(main())

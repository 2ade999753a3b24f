"""The one error type a user sees: where the problem is, which field, and how to fix it.

The CLI turns a RankflowError into a single line on stderr and exit code 2; nothing below the
CLI prints or exits.
"""

from __future__ import annotations


class RankflowError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None) -> None:
        self.message = message
        self.file = file
        self.field = field
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return " ".join(text.split())


def clip(text: object, limit: int = 80) -> str:
    """Input echoed in a message, cut so that a long value cannot make the one-line error long."""
    s = str(text)
    return s if len(s) <= limit else s[:limit] + "..."

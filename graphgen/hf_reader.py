"""Reading a Hugging Face config.json: every key type-checked, a wrong one refused with the one-line
error naming the file and the key."""

from __future__ import annotations

from typing import Any

from graphgen.errors import RankflowError

_MISSING = object()


class Reader:
    def __init__(self, data: dict[str, Any], file: str, prefix: str = "") -> None:
        self.data, self.file, self.prefix = data, file, prefix  # prefix: a nested mapping's path, for errors

    def bad(self, key: str, msg: str, fix: str) -> RankflowError:
        return RankflowError(msg, file=self.file, field=self.prefix + key, fix=fix)

    def nested(self, key: str) -> Reader:
        return Reader(self.mapping(key), self.file, f"{self.prefix}{key}.")

    def int(self, key: str, default: Any = _MISSING, minimum: int = 1) -> int:
        value = self.data.get(key, default)
        if value is _MISSING:
            raise self.bad(key, "Hugging Face config lacks a required key", "use a complete config.json for this "
                                                                              "model type")
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.bad(key, f"must be an integer >= {minimum}, got {value!r}", "correct the config.json")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
            raise self.bad(key, f"must be a positive number, got {value!r}", "correct the config.json")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.bad(key, f"must be true or false, got {value!r}", "correct the config.json")
        return value

    def text(self, key: str, default: str | None) -> str | None:
        value = self.data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.bad(key, f"must be a string, got {value!r}", "correct the config.json")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key) or {}
        if not isinstance(value, dict):
            raise self.bad(key, f"must be a mapping, got {type(value).__name__}", "correct the config.json")
        return value

"""Framework profiles (framework_configs/<name>.yaml): the defaults a training framework sets and how it
reports its own numbers, per version, each value cited in the profile.

A profile lists versions oldest first; a version inherits every earlier version's settings and
changes some. `workload.framework` names the profile and `workload.framework_version` the version (the
newest listed at or before it; the newest of all when unset). Its settings fill only what the user's
files and --set leave unset."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from graphgen.config.base import Str, Strict
from graphgen.errors import RankflowError

SECTIONS = ("workload", "parallelism")


class FrameworkReport(Strict):
    flops: Str | None = Field(None, description="FLOP convention of the TFLOP/s and MFU the framework logs "
                                                "(graphgen.model.flop_conventions).")
    memory: Literal["allocated", "reserved"] | None = Field(
        None, description="The peak-memory figure it logs: PyTorch's max allocated or max reserved.")


class FrameworkVersion(Strict):
    set: dict[Str, Any] = Field(default_factory=dict, description="Defaults, as section.field: value.")
    report: FrameworkReport | None = None
    proposed: dict[Str, Any] = Field(default_factory=dict, description="Behaviour not (yet) a Rankflow option: "
                                                                      "documentation only.")
    sources: dict[Str, Str] = Field(default_factory=dict, description="Evidence for each value.")


class FrameworkProfile(Strict):
    name: Str
    description: Str = ""
    versions: dict[Str, FrameworkVersion] = Field(min_length=1)


@dataclass(frozen=True)
class Framework:
    """A profile resolved at one version."""

    name: str
    version: str
    settings: dict[str, Any] = field(default_factory=dict)
    flops: str = "standard"
    memory: str = "allocated"
    file: str = ""
    notes: tuple[str, ...] = ()


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version))


def resolve(profile: FrameworkProfile, version: str | None, file: str) -> Framework:
    """The profile at `version`: every listed version up to the newest at or before it, merged."""
    listed = list(profile.versions)
    if version is None:
        chosen = listed[-1]
    else:
        earlier = [v for v in listed if _key(v) <= _key(version)]
        if not _key(version) or not earlier:
            raise RankflowError(f"framework {profile.name} has no profile at or before version '{version}'",
                                file=file, field="workload.framework_version", fix=f"use one of: {', '.join(listed)}")
        chosen = max(earlier, key=_key)
    settings: dict[str, Any] = {}
    flops, memory = "standard", "allocated"
    for v in listed:
        if _key(v) > _key(chosen):
            continue
        body = profile.versions[v]
        for key in body.set:
            if key.split(".", 1)[0] not in SECTIONS or "." not in key:
                raise RankflowError(f"setting '{key}' is not a workload or parallelism field", file=file,
                                    field=f"versions.{v}.set", fix="write workload.<field> or parallelism.<field>")
        settings.update(body.set)
        if body.report:
            flops = body.report.flops or flops
            memory = body.report.memory or memory
    return Framework(profile.name, chosen, settings, flops, memory, file)


def apply_defaults(fw: Framework, workload: dict, parallelism: dict, attention_kernels) -> tuple[str, ...]:
    """Fill the fields the user left unset (in place, on copies the caller owns); returns notes on
    defaults the device cannot take (an attention kernel it has no curve for keeps the default)."""
    notes = []
    for key, value in fw.settings.items():
        section, name = key.split(".", 1)
        target = workload if section == "workload" else parallelism
        *path, name = name.split(".")
        for part in path:  # a nested section (workload.inference.*): fill a copy of it
            child = target.get(part)
            target[part] = child = dict(child) if isinstance(child, dict) else {}
            target = child
        if name in target:
            continue
        if key == "workload.attention_kernel" and value is not None and value not in attention_kernels:
            notes.append(f"{fw.name} {fw.version} runs the '{value}' attention kernel, for which this device lists "
                         "no efficiency curve: its default attention curve is used")
            continue
        target[name] = value
    return tuple(notes)

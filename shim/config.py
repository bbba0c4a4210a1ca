"""The optional configuration file (TOML), validated with pydantic, imported only when used."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and the key."""


def load(path: str) -> dict[str, Any]:
    """The validated settings of a config file, as a dict of CLI option names."""
    from pydantic import BaseModel, ConfigDict, ValidationError

    class Serve(BaseModel):
        model_config = ConfigDict(extra="forbid")
        address: str | None = None
        system: bool = False
        backend: Literal["auto", "cgroup2", "cgroup1", "fake"] = "auto"
        cgroup_root: str | None = None
        state_dir: str | None = None
        log_level: Literal["debug", "info", "warning", "error"] = "info"
        version: str = "252"

    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        return Serve.model_validate(raw.get("serve", {})).model_dump()
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(x) for x in ("serve", *first["loc"]))
        raise ConfigError(f"{path}: {key}: {first['msg']}") from None

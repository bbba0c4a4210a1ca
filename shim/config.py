"""The optional configuration file (TOML), validated with pydantic, imported only when used."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and the key."""


def _line_of(text: str, loc: list[str]) -> int | None:
    """The line of `key =` in table [loc[0]] (or of the table header), 1-based."""
    if not loc:
        return None
    table, key = loc[0], loc[1] if len(loc) > 1 else None
    current, header = None, None
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.split("#", 1)[0].strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped.strip("[]").strip()
            if current == table and header is None:
                header = n
            continue
        name = stripped.split("=", 1)[0].strip().strip('"')
        if current == table and key is not None and "=" in stripped and name == key:
            return n
    return header


def load(path: str) -> dict[str, Any]:
    """The validated settings of a config file, as a dict of CLI option names (plus
    "policy", the shim.core.policy.Policy of the [units] and [power] tables)."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

    from shim.core.policy import DEFAULT_POWER_ACTIONS, RECORD, Policy, UserManager

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Serve(Strict):
        address: str | None = None
        system: bool = False
        backend: Literal["auto", "cgroup2", "cgroup1", "fake"] = "auto"
        cgroup_root: str | None = None
        state_dir: str | None = None
        log_level: Literal["debug", "info", "warning", "error"] = "info"
        version: str = "252"
        mark_booted: bool = False
        log_target: Literal["stderr", "syslog"] = "stderr"
        exit_on_idle: float | None = Field(None, gt=0)
        private_socket: str | None = None  # None: /run/systemd/private on the system bus
        unit_root: str | None = None

    class Units(Strict):
        user_manager: UserManager = UserManager.SCOPESHIM
        user_manager_command: list[str] = Field(default_factory=list)
        user_manager_zygote: bool = True
        runtime_dir_helper: str = Policy().runtime_dir_helper
        autovt_command: list[str] = Field(default_factory=list)

        @model_validator(mode="after")
        def _exec_needs_a_command(self) -> Units:
            if self.user_manager is UserManager.EXEC and not self.user_manager_command:
                raise ValueError('user_manager = "exec" needs user_manager_command')
            return self

    Action = Literal["record"] | list[str]  # noqa: N806 (a type alias)

    class Power(Strict):
        record_file: str = Policy().record_file
        poweroff: Action | None = None
        reboot: Action | None = None
        halt: Action | None = None
        kexec: Action | None = None
        suspend: Action | None = None
        hibernate: Action | None = None
        hybrid_sleep: Action | None = Field(None, alias="hybrid-sleep")
        suspend_then_hibernate: Action | None = Field(None, alias="suspend-then-hibernate")
        factory_reset: Action | None = Field(None, alias="factory-reset")

    class File(Strict):
        serve: Serve = Field(default_factory=lambda: Serve.model_validate({}))
        units: Units = Field(default_factory=Units)
        power: Power = Field(default_factory=lambda: Power.model_validate({}))

    try:
        text = Path(path).read_text()
        raw = tomllib.loads(text)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        parsed = File.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        # pydantic adds the union member it tried ("literal['record']"): keep the key path
        loc = [str(x) for x in first["loc"] if str(x).replace("-", "_").isidentifier()]
        key = ".".join(loc) or "(top level)"
        line = _line_of(text, loc)
        where = f"{path}:{line}" if line else path
        raise ConfigError(f"{where}: {key}: {first['msg']}") from None
    actions = dict(DEFAULT_POWER_ACTIONS)
    for name, value in parsed.power.model_dump(by_alias=True).items():
        target = f"{name}.target"
        if target in actions and value is not None:
            actions[target] = RECORD if value == "record" else tuple(value)
    settings: dict[str, Any] = parsed.serve.model_dump()
    settings["policy"] = Policy(
        user_manager=parsed.units.user_manager,
        user_manager_command=tuple(parsed.units.user_manager_command),
        user_manager_zygote=parsed.units.user_manager_zygote,
        runtime_dir_helper=parsed.units.runtime_dir_helper,
        power_actions=actions,
        autovt_command=tuple(parsed.units.autovt_command),
        record_file=parsed.power.record_file,
    )
    return settings

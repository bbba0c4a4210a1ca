"""Unit files applied to units: slices and scopes get their fragment and drop-ins when they
load (before they start), SetUnitProperties writes systemd's drop-ins, Reload reads them all
again and applies what changed to running units, RevertUnitFiles removes them."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from backends.base import Capability
from backends.resources import Totals, scaled
from compat import errors, readable, unitname, unitvalues
from compat.enums import LoadState
from compat.properties import PROPERTIES, SCALE_TARGETS, Assignment, merge_into
from compat.unitname import UnitType
from compat.unitvalues import Property
from shim.core.restore import Restore
from shim.core.state import Saved
from shim.core.unitfiles import Loaded, UnitFiles
from shim.core.units import Unit

log = logging.getLogger(__name__)

_CONFIGURABLE = (UnitType.SLICE, UnitType.SCOPE)


class Configured(Restore):
    """The unit-file layer between the unit types and the public operations."""

    unit_files: UnitFiles | None = None  # None: no unit files are read or written (tests)

    def _configurable(self, unit: Unit) -> bool:
        """Slices and scopes, and the services scopeshim handles (policy.py) unless masked:
        they read drop-ins ([Unit] and resource control)."""
        if self.unit_files is None or unit.perpetual:
            return False
        if unit.type is UnitType.SERVICE:
            return unit.handler is not None and unit.load_state is LoadState.LOADED
        return unit.type in _CONFIGURABLE and unit.load_state is not LoadState.NOT_FOUND

    def load_unit(self, name: str) -> Unit:
        fresh = name not in self.units
        unit = super().load_unit(name)
        if fresh and self._configurable(unit):
            unit.base_settings = dict(unit.settings)
            self._configure(unit)
        return unit

    def _unregister(self, unit: Unit) -> None:
        super()._unregister(unit)
        if unit.transient and self.unit_files is not None:
            self.unit_files.remove_transient(unit.name)

    def _configure_transient(self, unit: Unit) -> None:
        """A new transient unit: drop-ins apply after its own settings (systemd 252 in the
        lab: a tr-.slice.d/ MemoryMax= won over the one StartTransientUnit gave)."""
        if self._configurable(unit):
            unit.base_settings = dict(unit.settings)
            self._configure(unit)

    def restore(self, saved: Saved) -> None:
        """After a restart: the files are read again (they may have changed meanwhile)."""
        super().restore(saved)
        for unit in list(self.units.values()):
            if self._configurable(unit):
                assert self.unit_files is not None
                loaded = self.unit_files.load(unit.name, unit.type)
                from_files = {n for n, _, _ in loaded.assignments}
                from_files |= {SCALE_TARGETS.get(n, f"{n}Scale") for n in from_files}
                unit.base_settings = {k: v for k, v in unit.settings.items() if k not in from_files}
                self._configure(unit, loaded)
                self._apply_resources(unit)

    def _configure(self, unit: Unit, loaded: Loaded | None = None) -> None:
        """Settings = the unit's own (base) + its fragment + its drop-ins, in that order."""
        assert self.unit_files is not None and unit.base_settings is not None
        if loaded is None:
            loaded = self.unit_files.load(unit.name, unit.type)
        unit.fragment_path = loaded.fragment
        unit.dropin_paths = list(loaded.dropins)
        unit.config_stamp = loaded.stamp
        if unit.type is UnitType.SLICE and not unit.transient:
            # systemd.unit(5): a unit file linked to /dev/null is masked
            unit.load_state = LoadState.MASKED if loaded.masked else LoadState.LOADED
        settings = dict(unit.base_settings)
        merge_into(settings, self._supported(unit, loaded.assignments))
        unit.settings = settings
        stop = settings.get("StopWhenUnneeded")
        if isinstance(stop, bool):
            unit.stop_when_unneeded = stop

    def _supported(self, unit: Unit, found: Sequence[Property]) -> list[Assignment]:
        out = []
        for name, _sig, value in found:
            if name in ("DevicePolicy", "DeviceAllow") and (
                Capability.DEVICES not in self.backend.capabilities
            ):
                log.warning("%s: %s= not supported on this hierarchy, ignoring", unit.name, name)
                continue
            out.append(Assignment(name, value, PROPERTIES[name].merge))
        return out

    def _persist(self, unit: Unit, runtime: bool, assignments: Sequence[Assignment]) -> None:
        """SetUnitProperties writes what it sets as systemd does (50-NAME.conf in the unit's
        transient directory, or system.control in /run or /etc), before anything applies,
        so that the settings outlive the unit (a user slice made again at the next login
        gets them). The values apply at once; a new file is added at the end of
        DropInPaths, and only a later load puts it in its place in the order (systemd 252
        in the lab: fixtures/oracle/dropins/real-systemd-252-e2e.out)."""
        if not self._configurable(unit) or unit.base_settings is None:
            return
        assert self.unit_files is not None
        preview = dict(unit.settings)
        merge_into(preview, assignments)
        directory = self.unit_files.control_dir(unit.name, transient=unit.transient,
                                                runtime=runtime)  # fmt: skip
        kept = []
        for name in dict.fromkeys(a.name for a in assignments):
            written = unitvalues.drop_in(unit.type, name, preview.get(name))
            if written is None:
                kept.append(name)
                continue
            try:
                path = self.unit_files.write(directory, *written)
            except OSError as e:
                raise errors.from_errno(
                    e.errno, f"Failed to write drop-in {written[0]}: {e.strerror}"
                ) from None
            if path not in unit.dropin_paths:
                unit.dropin_paths.append(path)
        merge_into(unit.base_settings, [a for a in assignments if a.name in kept])
        unit.config_stamp = self.unit_files.stamp(unit.name, unit.type)

    def _reload_files(self) -> None:
        """Reload(): every unit's files are read again; changed settings are applied to the
        running units (systemctl daemon-reload, systemd.unit(5))."""
        for unit in list(self.units.values()):
            if self._configurable(unit) and unit.base_settings is not None:
                before = dict(unit.settings)
                self._configure(unit)
                for key in before.keys() - unit.settings.keys():
                    # a setting no file gives any more returns to its default (for a
                    # percentage, the setting it stood for)
                    key = SCALE_TARGETS.get(key, key)
                    default = readable.DEFAULTS.get(key)
                    if default is not None and f"{key}Scale" not in unit.settings:
                        unit.settings.setdefault(key, default)
                if unit.settings != before:
                    self._apply_resources(unit)
                self.listener.unit_changed(unit)

    def revert_unit_files(self, names: Sequence[str]) -> list[tuple[str, str, str]]:
        """RevertUnitFiles: the changes as (type, path, destination), "unlink" each."""
        out: list[tuple[str, str, str]] = []
        for name in names:
            if not unitname.is_valid(name):
                # systemd 252 answers an invalid name so (fixtures/oracle/dropins/, oracle3)
                raise errors.InvalidArgs("Invalid argument")
            if self.unit_files is None:
                continue
            try:
                removed = self.unit_files.revert(name)
            except OSError as e:
                raise errors.from_errno(e.errno, f"Failed to revert {name}: {e.strerror}") from None
            out += [("unlink", path, "") for path in removed]
        return out

    def need_daemon_reload(self, unit: Unit) -> bool:
        """NeedDaemonReload=: the unit's files changed since they were read."""
        if not self._configurable(unit) or unit.base_settings is None:
            return False
        assert self.unit_files is not None
        return self.unit_files.stamp(unit.name, unit.type) != unit.config_stamp

    def scaled_setting(self, unit: Unit, name: str) -> int | None:
        """MemoryMax= etc. given as a percentage (NAMEScale) in bytes or tasks, as systemd
        reads them back (the lab: MemoryLow=5% read 1263808512)."""
        fraction = unit.settings.get(f"{name}Scale")
        if name in unit.settings or not isinstance(fraction, int):
            return None
        totals = getattr(self.backend, "totals", None) or Totals.of_this_machine()
        total = totals.tasks if name == "TasksMax" else totals.memory
        return scaled(fraction, total)

    def unit_path(self) -> list[str]:
        """Manager.UnitPath."""
        return [] if self.unit_files is None else self.unit_files.search_path()

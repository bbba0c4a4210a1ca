"""Unit files on disk: the system manager's search path, fragments and drop-ins found as
systemd finds them, read into bus assignments, and the set-property drop-ins written and
reverted. Everything lives under a configurable root, so tests never touch /etc or /run."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from compat import unitfile, unitvalues
from compat.unitname import UnitType
from compat.unitvalues import BadValueError, Property

log = logging.getLogger(__name__)

# systemd.unit(5) "System Unit Search Path", in the order (and so the precedence) systemd 252
# on Debian 12 reported as Manager.UnitPath in the lab (fixtures/oracle/dropins/)
SEARCH_PATH = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
)
PERSISTENT_CONTROL, RUNTIME_CONTROL, TRANSIENT = SEARCH_PATH[:3]
# systemctl revert: drop-ins of the unit itself in /etc and /run (observed in the lab)
REVERTIBLE = (PERSISTENT_CONTROL, RUNTIME_CONTROL, "/etc/systemd/system", "/run/systemd/system")


@dataclass(slots=True)
class Loaded:
    """What the files say about one unit."""

    fragment: str = ""  # FragmentPath=
    masked: bool = False  # the fragment is a symlink to /dev/null (systemd.unit(5))
    dropins: list[str] = field(default_factory=list)  # DropInPaths=, in the order applied
    assignments: list[Property] = field(default_factory=list)  # fragment first, then drop-ins
    stamp: tuple[tuple[str, int], ...] = ()  # (path, mtime) of what was read


def name_variants(name: str) -> list[str]:
    """The names whose NAME.d/ directories apply to NAME (systemd.unit(5)): the name, its
    template, its dash prefixes longest first ("user-.slice" for "user-1000.slice"), the
    type ("slice")."""
    stem, _, suffix = name.rpartition(".")
    out = [name]
    prefix, at, _instance = stem.partition("@")
    if at:
        # an instance reads its template's drop-ins too (user@.service.d for user@1000)
        out.append(f"{prefix}@.{suffix}")
        stem = prefix
    if not stem.startswith("-"):
        parts = stem.split("-")
        for n in range(len(parts) - 1, 0, -1):
            out.append("-".join(parts[:n]) + "-." + suffix)
    out.append(suffix)
    return out


class UnitFiles:
    """The unit search path under ROOT ("/" on a real machine)."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def search_path(self) -> list[str]:
        return [self.real(p) for p in SEARCH_PATH]

    def fragment(self, name: str) -> str:
        """The first NAME in the search path (a higher directory overrides a lower one)."""
        for directory in self.search_path():
            path = os.path.join(directory, name)
            if os.path.lexists(path) and not os.path.isdir(path):
                return path
        return ""

    def dropins(self, name: str) -> list[str]:
        """NAME.d/*.conf as systemd orders them: by file name across all directories, the
        first directory of the search path (and the most specific name) winning a name."""
        found: dict[str, str] = {}
        variants = name_variants(name)
        for directory in self.search_path():
            if not os.path.isdir(directory):
                continue  # one stat instead of a failed listdir per name variant (issue 20)
            for variant in variants:
                d = os.path.join(directory, f"{variant}.d")
                try:
                    entries = sorted(os.listdir(d))
                except OSError:
                    continue
                for entry in entries:
                    path = os.path.join(d, entry)
                    if entry.endswith(".conf") and entry not in found and not os.path.isdir(path):
                        found[entry] = path
        # a drop-in that is a symlink to /dev/null masks the others of its name; it is still
        # listed (DropInPaths showed it in the lab) and reads as empty
        return [found[k] for k in sorted(found)]

    def load(self, name: str, unit_type: UnitType) -> Loaded:
        """Read the unit's fragment and drop-ins; bad lines are logged (FILE:LINE: ...) and
        skipped, as systemd does; an unreadable file is logged and skipped whole."""
        out = Loaded()
        fragment = self.fragment(name) if unit_type is UnitType.SLICE else ""
        if fragment and os.path.realpath(fragment) == "/dev/null":
            out.fragment, out.masked = fragment, True
            return out
        stamp = []
        out.fragment = fragment
        out.dropins = self.dropins(name)
        for path in ([fragment] if fragment else []) + out.dropins:
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
                stamp.append((path, os.stat(path).st_mtime_ns))
            except OSError as e:
                log.warning("%s: failed to read: %s, ignoring", path, e.strerror)
                continue
            out.assignments += self._read(path, text, name, unit_type)
        out.stamp = tuple(stamp)
        return out

    @staticmethod
    def _read(path: str, text: str, name: str, unit_type: UnitType) -> list[Property]:
        entries, problems = unitfile.parse(text, unitvalues.SECTIONS[unit_type])
        for p in problems:
            log.warning("%s:%d: %s", path, p.line, p.message)
        out: list[Property] = []
        for e in entries:
            # systemd.unit(5): specifiers are resolved in [Unit] settings (names, texts)
            value = unitfile.expand_specifiers(e.value, name) if e.section == "Unit" else e.value
            try:
                out += unitvalues.to_properties(unit_type, e.section, e.key, value)
            except BadValueError as err:
                log.warning("%s:%d: %s", path, e.line, err)
        return out

    def stamp(self, name: str, unit_type: UnitType) -> tuple[tuple[str, int], ...]:
        """The (path, mtime) of the files that would be read now (NeedDaemonReload=)."""
        fragment = self.fragment(name) if unit_type is UnitType.SLICE else ""
        out = []
        for path in ([fragment] if fragment else []) + self.dropins(name):
            try:
                out.append((path, os.stat(path).st_mtime_ns))
            except OSError:
                continue
        return tuple(out)

    def control_dir(self, name: str, *, transient: bool, runtime: bool) -> str:
        """Where set-property writes: a transient unit's own directory, else system.control
        in /run (runtime) or /etc (persistent); as systemd 252 wrote them in the lab."""
        base = TRANSIENT if transient else RUNTIME_CONTROL if runtime else PERSISTENT_CONTROL
        return self.real(os.path.join(base, f"{name}.d"))

    def write(self, directory: str, file_name: str, text: str) -> str:
        """Write a drop-in atomically (a temporary name, then rename)."""
        os.makedirs(directory, mode=0o755, exist_ok=True)
        path = os.path.join(directory, file_name)
        tmp = os.path.join(directory, f".#{file_name}")
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path

    def revert(self, name: str) -> list[str]:
        """systemctl revert: remove the unit's own drop-in directories in /etc and /run and
        both system.control ones, whatever files they hold (systemd 252 removed a README
        too); the removed paths, files before their directory."""
        removed: list[str] = []
        for base in REVERTIBLE:
            d = self.real(os.path.join(base, f"{name}.d"))
            try:
                entries = sorted(os.listdir(d))
            except OSError:
                continue
            for entry in entries:
                path = os.path.join(d, entry)
                if not os.path.isdir(path) or os.path.islink(path):
                    os.unlink(path)
                    removed.append(path)
            try:
                os.rmdir(d)
                removed.append(d)
            except OSError:
                pass  # something else lives there: leave it
        return removed

    def remove_transient(self, name: str) -> None:
        """A transient unit's own drop-ins go with it (systemd removes the files in the
        transient directory when it frees a transient unit), so that a later unit of the
        same name (session-c1.scope after a restart) starts clean."""
        d = self.real(os.path.join(TRANSIENT, f"{name}.d"))
        try:
            entries = os.listdir(d)
        except OSError:
            return
        for entry in entries:
            try:
                os.unlink(os.path.join(d, entry))
            except OSError as e:
                log.warning("%s: not removed: %s", os.path.join(d, entry), e.strerror)
        try:
            os.rmdir(d)
        except OSError as e:
            log.warning("%s: not removed: %s", d, e.strerror)

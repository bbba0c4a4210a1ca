"""systemd.service(5) "Command lines": environment variable substitution in ExecStart=
arguments ($FOO as a word of its own, ${FOO} anywhere, $$ for a dollar sign)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_WORD = re.compile(rf"\$({_NAME})")
_INLINE = re.compile(rf"\$\$|\$\{{({_NAME})\}}")


def expand(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """ARGS with ENV substituted: "$FOO" as a whole word becomes the value split at
    whitespace (zero or more arguments); "${FOO}" becomes the exact value within one
    argument; "$$" a literal "$"; unknown variables are empty."""
    out: list[str] = []
    for arg in args:
        whole = _WORD.fullmatch(arg)
        if whole is not None:
            out.extend(env.get(whole.group(1), "").split())
            continue
        out.append(
            _INLINE.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), ""), arg)
        )
    return out

"""compat.execline: systemd.service(5)'s substitution in command lines."""

from __future__ import annotations

from compat.execline import expand

ENV = {"ONE": "a  b", "TWO": "x"}


def test_substitution() -> None:
    # $FOO as a word: split at whitespace; ${FOO}: one argument, whitespace kept
    assert expand(["$ONE"], ENV) == ["a", "b"]
    assert expand(["${ONE}"], ENV) == ["a  b"]
    assert expand(["pre${TWO}post"], ENV) == ["prexpost"]
    # unknown variables are empty: a whole-word one leaves no argument
    assert expand(["$NOPE", "[${NOPE}]"], ENV) == ["[]"]
    # $$ is a literal dollar sign (KIO escapes every $ this way); $FOO inside a word stays
    assert expand(["a$$b", "$$TWO", "p$TWO"], ENV) == ["a$b", "$TWO", "p$TWO"]
    assert expand(["${unterminated", "$", "$1"], ENV) == ["${unterminated", "$", "$1"]

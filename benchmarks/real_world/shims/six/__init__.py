"""Fake ``six``: only ``six.moves.urllib`` (with the scoreboard's offline ``urlopen``)."""

from . import moves  # noqa: F401

PY3 = True

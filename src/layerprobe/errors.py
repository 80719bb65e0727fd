"""Exceptions that the command line turns into exit codes."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for (bad flag, missing file, unknown model).

    The CLI prints its message on one line and exits with code 2, without a traceback.
    The message says what was wrong and what would be valid.
    """

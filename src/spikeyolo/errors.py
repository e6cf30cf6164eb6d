"""The project's user-facing error type (ground floor: no package imports).

:class:`UserError` marks a failure caused by the user's input (a file, a flag, a value), not by a bug: the
command line prints its message as one line and exits 1, without a traceback. Library callers can catch it
as a whole. The specific errors (``DataConfigError``, ``DataError``, ``CheckpointError``, ``DatFormatError``,
...) also derive from ``ValueError`` so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message names the file, flag or value."""


class InputError(UserError, ValueError):
    """A flag or argument value that cannot be used (or a flag that does not apply)."""

"""The project's error types: a problem with what the user gave (a file, a flag, a value), never a bug.

Every error a user's file or setting can cause derives from :class:`SpikeYOLOError`, so callers (the CLI, the
property-based tests) can tell them from bugs; messages name the file (and line or field) or the flag they
are about. The command line prints such an error as one line and exits 1, without a traceback. The types also
derive from ``ValueError`` where that was the type raised before, so existing ``except ValueError`` code keeps
working.
"""

from __future__ import annotations


class SpikeYOLOError(Exception):
    """Base of the errors caused by user input (files, flags, data), as opposed to bugs."""


class FileFormatError(SpikeYOLOError, ValueError):
    """A file that cannot be read as what it claims to be (the message names the file)."""


class CheckpointError(FileFormatError):
    """A checkpoint (ours or the official SpikeYOLO one) that is unreadable, unsafe or of the wrong kind."""


class InputError(SpikeYOLOError, ValueError):
    """A flag or argument value that cannot be used (or a flag that does not apply)."""

"""The one exception family of snnc.

Every error a user can cause derives from :class:`UserError`; the CLI turns it into a
one-line message and exit status 2.  Anything else escaping the CLI is an internal error
(exit status 1).  Messages say what went wrong, where, and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SnncError(Exception):
    """Base of every exception snnc raises on purpose."""


class UserError(SnncError):
    """A mistake in the user's input: a model, a file, an option, a pipeline."""


class InputFileError(UserError):
    """A file that is missing, unreadable, truncated or of an unsupported kind."""


class UnsupportedError(UserError):
    """An op, module or construct that snnc does not (yet) support."""


class ParseError(UserError):
    """Malformed textual IR or pipeline string."""


class VerifyError(UserError):
    """An IR graph that breaks an invariant; the message names the node and the values."""


class PassError(UserError):
    """A pass could not run: missing prerequisite, bad option, or data it needs."""


class TargetError(UserError):
    """A backend refuses a graph or a model does not fit the target."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by the CLI's handler so that every ``finally`` (temporary directories) runs
    exactly as for Ctrl-C; the CLI exits 143 instead of 130."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message ('' for an empty one): foreign libraries write long,
    multi-line messages, and snnc reports in one line."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""

"""The errors the instrument can end a run with, one tree, one exit code each.

    LoadtestError                 anything that stops a run; ``str()`` is the one-line message
    ├── UsageError                bad flags or files (exit 2)
    ├── TargetUnreachable         connection refused, DNS, timeout before any answer (exit 3)
    ├── TargetRefused             the target answered the probe with an error status (exit 4)
    └── LaunchFailed              the tuner could not start a gateway (exit 5)

Per-request failures during a run are *data* (``Outcome.ERROR`` in a record), not exceptions:
an instrument reports them, it does not stop on them. The CLI maps these classes to the
message and the exit status in one place (``cli.main``).
"""

from __future__ import annotations


class LoadtestError(Exception):
    """Ends a run with a one-line message and a non-zero exit status."""

    exit_code = 1


class UsageError(LoadtestError):
    """The command line or an input file is wrong."""

    exit_code = 2


class TargetUnreachable(LoadtestError):
    """No HTTP answer at all from the target (refused, unresolvable, timed out)."""

    exit_code = 3


class TargetRefused(LoadtestError):
    """The target answered, but with an error that every request would get (401, 404, ...)."""

    exit_code = 4


class LaunchFailed(LoadtestError):
    """A gateway subprocess did not become ready."""

    exit_code = 5

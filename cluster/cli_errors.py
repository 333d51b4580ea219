"""How the ``ungrok`` command line ends: exit codes, and one line for every error.

A command that fails prints one line on stderr, ``error: <what> ...; <the fix>``, and exits with
the code below; a traceback only with ``--debug`` (anywhere on the command line) or
``UNGROK_DEBUG=1``. The table is ``docs/exit-codes.md``; :func:`describe` is the one place that
turns an exception into (code, line).
"""

from __future__ import annotations

import errno

OK = 0  # the command did what it was asked
FAILED = 1  # it ran and failed: a failed cell, a FAILED job, a full disk, a damaged store, a bug
USAGE = 2  # refused before anything started: a usage error or bad input (nothing written)
BUSY = 3  # refused: another process holds the run or sweep folder (its pid is named)
INTERRUPTED = 130  # Ctrl-C (SIGINT); a rerun resumes

_OURS = ("runner.", "cluster.", "mech.", "interventions.")
_FULL = (errno.ENOSPC, errno.EDQUOT)


def one_line(text: object) -> str:
    """``text`` on one line (newlines and runs of blanks collapsed)."""
    return " ".join(str(text).split())


def _chain(e: BaseException):
    """``e`` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)


def _os_message(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in _FULL:
        return (f"no space left on device{where}; free space and rerun the same command (a run resumes from "
                "its last checkpoint, a corpus build starts over)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{e.strerror or 'permission denied'}{where}: the path is not writable by you; pass another path"
    return f"{e.strerror or type(e).__name__}{where}"


def describe(e: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception a command did not turn into a user error itself."""
    from cluster.ray_setup import ClusterUnreachable
    from runner._io import FolderBusy

    if isinstance(e, FolderBusy):
        return BUSY, one_line(e)
    if isinstance(e, ClusterUnreachable):
        return FAILED, one_line(e)
    if type(e).__module__.startswith(_OURS):  # the library's own errors carry their fix
        return (USAGE if isinstance(e, ValueError) else FAILED), one_line(e)
    for cause in _chain(e):
        if isinstance(cause, OSError) and cause.errno is not None:
            return FAILED, one_line(_os_message(cause))
    return FAILED, one_line(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback; "
                            "please report it)")

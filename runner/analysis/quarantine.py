"""Quarantined seeds: sealed until one logged unseal, refused by every command that would train,
score, show or evaluate them.

A locked prereg names its quarantined seeds (``[quarantine] seeds = [1042, 1043, 1044]``: the
replication set of the paper, "trained with identical configs, never evaluated, inspected, or
plotted until replication week"). Every command that touches runs or cells - ``train``,
``sweep``, ``submit``, ``show``, ``status``, ``verdict``, ``report``, ``rescore`` - calls
:func:`refuse_quarantined` with the seeds it is about to touch, before it starts any job or reads
any figure:

- no prereg known to the command: nothing is sealed (the CLI takes ``--prereg`` or
  ``$UNGROK_PREREG``, so a project sets its prereg once);
- a quarantined seed without an unseal: :class:`PreregError` naming the runs or cells, the seeds,
  the prereg and the fix;
- with an unseal (a non-empty reason): one record is appended to ``<prereg>.unseal.jsonl`` -
  UTC time, user, host, command, the seeds and what carried them, the reason, the ungrok version
  - hash-chained after the previous record (the first after the lock's sha256), so
  :func:`runner.analysis.prereg.verify` refuses a log that was edited or cut. The report lists
  every record.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from collections.abc import Mapping

from runner import __version__
from runner._io import utcnow
from runner.analysis.prereg import Locked, PreregError, chain_record, read_unseal_log, unseal_log_path


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "?")


def log_unseal(locked: Locked, command: str, touched: Mapping[str, int], reason: str) -> dict:
    """Append one unseal record to the prereg's unseal log (an exclusive lock held while the chain
    is read, checked and extended; the line is flushed and synced before the lock is released)."""
    if not reason.strip():
        raise PreregError("--unseal needs a reason (why the seal is broken now), e.g. "
                          "--unseal 'replication week: the single final read'")
    if not locked.path:
        raise PreregError("unsealing quarantined seeds needs a locked prereg file (--prereg FILE)")
    log = unseal_log_path(locked.path)
    with open(log, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            recs = read_unseal_log(locked.path, locked.record["sha256"])
            prev = recs[-1]["hash"] if recs else locked.record["sha256"]
            body = {"n": len(recs) + 1, "utc": utcnow(), "user": _user(), "host": socket.gethostname(),
                    "command": command, "seeds": sorted(set(touched.values())), "what": sorted(touched),
                    "reason": reason, "ungrok_version": __version__}
            rec = chain_record(prev, body)
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return rec


def refuse_quarantined(locked: Locked | None, seeds: Mapping[str, int | None], unseal: str | None,
                       command: str) -> dict | None:
    """The one quarantine check every command calls before it trains, scores, shows or evaluates.

    ``seeds``: what the command is about to touch -> its seed (``{run or cell label: seed}``;
    ``None`` for a run without one). ``unseal``: the reason given with ``--unseal`` (None: sealed).
    Returns the unseal record written, or None when no quarantined seed is touched (nothing is
    logged then). Raises :class:`PreregError` for a quarantined seed without an unseal.
    """
    if locked is None:
        return None
    sealed = locked.prereg.quarantined_seeds
    touched = {what: s for what, s in seeds.items() if s is not None and s in sealed}
    if not touched:
        return None
    if unseal is None:
        names = sorted(touched)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise PreregError(
            f"{command}: {shown} use quarantined seed(s) {sorted(set(touched.values()))} of {locked.path}; they "
            f"stay sealed until the final read. Leave them out, or pass --unseal REASON (recorded in "
            f"{unseal_log_path(locked.path)} and the report)")
    return log_unseal(locked, command, touched, unseal)


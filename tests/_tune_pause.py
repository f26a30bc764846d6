"""``python tests/_tune_pause.py ARGS...`` runs ``serray ARGS...`` with a pause in tune trials' result writes.

A test hook, not a test module: when :data:`PAUSE_ENV` names a folder, the trial named by
the file ``pause_trial`` in it (its 1-based order of finalisation, or ``all``) writes
``<trial>.paused`` (holding its process id) after its predictions and before its record,
then sleeps (``pause_seconds`` in the folder, default 600): a window to kill the driver
during a trial's result write, or a slow result write. It reaches the trials through
:func:`serray.tune.runner.tune_model`'s ``on_result_write``.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

PAUSE_ENV = "SERRAY_TUNE_PAUSE_IN_WRITE"


def pause_in_write(trial_id: str) -> None:
    """The hook (a no-op unless :data:`PAUSE_ENV` is set in the trial's process)."""
    folder = os.environ.get(PAUSE_ENV)
    if not folder:
        return
    d = Path(folder)
    count = d / "finalised"
    n = int(count.read_text()) + 1 if count.exists() else 1
    count.write_text(str(n))
    which = (d / "pause_trial").read_text().strip() if (d / "pause_trial").exists() else ""
    if which == "all" or (which and n == int(which)):
        (d / f"{trial_id}.paused").write_text(str(os.getpid()))
        time.sleep(float((d / "pause_seconds").read_text()) if (d / "pause_seconds").exists() else 600)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's serray, as `python -m serray` from it
    import serray.tune.runner as runner
    from serray.cli import main as cli

    runner.tune_model = functools.partial(runner.tune_model, on_result_write=pause_in_write)
    cli(args=sys.argv[1:], prog_name="serray")


if __name__ == "__main__":
    main()

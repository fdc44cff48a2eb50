"""Keep EPANET's scratch files out of the user's working directory.

EPANET 2.2 (the library WNTR ships) writes its hydraulics scratch file as
``enXXXXXX`` in the *current directory* whenever it solves and saves
hydraulics (``ENsolveH``, which ``wntr.sim.EpanetSimulator.run_sim`` calls),
whatever ``file_prefix`` says. A run that is killed leaves a file of hundreds
of megabytes behind. Every EPANET call of the project therefore runs inside
:func:`epanet_scratch`, which makes a temporary folder the working directory
for the duration of the call.

The working directory is process-wide, so the switch is guarded by a lock and
restored on exit; threads that run EPANET at the same time take turns.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CWD_LOCK = threading.RLock()


@contextmanager
def epanet_scratch(directory: str | Path | None = None) -> Iterator[Path]:
    """Run the enclosed EPANET calls with ``directory`` as working directory.

    Parameters
    ----------
    directory : str or Path, optional
        An existing folder for the scratch files (usually the temporary folder
        that already holds the run's ``file_prefix``). Default: a new
        temporary folder, removed on exit.

    Yields
    ------
    Path
        The folder EPANET writes its scratch files into.
    """
    with _CWD_LOCK:
        owned = tempfile.TemporaryDirectory(prefix="twin-epanet-") if directory is None else None
        where = Path(owned.name if owned is not None else directory)
        previous = os.getcwd()
        os.chdir(where)
        try:
            yield where
        finally:
            os.chdir(previous)
            if owned is not None:
                owned.cleanup()

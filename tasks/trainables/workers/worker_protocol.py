"""The worker's end of the file protocol in ``tasks/trainables/external.py``, shared by every library's worker.

Imported by the worker scripts from their own folder (it is on ``sys.path`` when a script runs), so like them it
needs only the standard library and numpy, and runs on the oldest interpreter a worker environment has (3.9).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def serve(commands: dict[str, Callable[[Path, dict, dict[str, np.ndarray]], dict]]) -> None:
    """Run the command ``WORKDIR/request.json`` names on ``WORKDIR/data.npz``; write its ``result.json``."""
    workdir = Path(sys.argv[1])
    request = json.loads((workdir / "request.json").read_text())
    result: dict[str, Any]
    try:
        with np.load(workdir / "data.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        result = commands[request["command"]](workdir, request, arrays)
    except Exception as exc:  # reported as one line; the traceback goes to stderr for the log
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    (workdir / "result.json").write_text(json.dumps(result))

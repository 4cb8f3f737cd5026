"""One demo twin per test session for the modules that only read it (`twin demo --no-serve`).

Building the demo takes half a minute; modules that neither write to it nor serve it with
writes share this one instead of building their own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_BUILT: dict[str, Path] = {}


def shared_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of the session's read-only demo twin, built on first use."""
    if "demo" not in _BUILT:
        data = tmp_path_factory.mktemp("shared-demo") / "twin-data"
        result = subprocess.run(
            [sys.executable, "-c", "from twin.cli import main; main()", "demo", "--no-serve", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        _BUILT["demo"] = data
    return _BUILT["demo"]

"""The `cove` command: clear messages instead of failures later."""

from __future__ import annotations

import os
import subprocess

from server import COVE

# PYTHONPATH passes through so a checkout can be tested with another tree's venv.
BASE_ENV = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}


def test_serve_without_root_says_what_is_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(COVE), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**BASE_ENV, "COVE_DATA_DIR": str(tmp_path)},
    )
    assert run.returncode != 0
    assert "root" in run.stderr


def test_bad_api_keys_setting_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = subprocess.run(
        [str(COVE), "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**BASE_ENV, "COVE_DATA_DIR": str(tmp_path), "COVE_API_KEYS": "no-workspace"},
    )
    assert run.returncode != 0
    assert "COVE_API_KEYS" in run.stderr

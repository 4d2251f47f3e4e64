"""The `cove` command: clear messages instead of failures later."""

from __future__ import annotations

import subprocess

from server import COVE


def test_serve_without_root_says_what_is_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(COVE), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COVE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode != 0
    assert "root" in run.stderr


def test_bad_api_keys_setting_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = subprocess.run(
        [str(COVE), "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COVE_DATA_DIR": str(tmp_path), "COVE_API_KEYS": "no-workspace", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode != 0
    assert "COVE_API_KEYS" in run.stderr

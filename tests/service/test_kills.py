"""`kill -9` at random moments loses nothing: bench/kill_test.py with a few kills (30 by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_random_kills_lose_no_file_job_or_step(smollm2_dir: Path, tmp_path: Path) -> None:
    # smollm2_dir: the script builds its tiny model with SmolLM2's tokenizer, converted once here.
    run = subprocess.run(
        [sys.executable, "bench/kill_test.py", "--kills", "4", "--seed", "3", "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    print(summary)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "lost: 0" in summary and "jobs: 0" not in summary

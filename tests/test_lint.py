"""ruff (pyproject.toml ``[tool.ruff]``) finds nothing in the repository, and does find a planted error."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


def _ruff(*paths: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUFF), "check", "--no-cache", *map(str, paths)], cwd=REPO, capture_output=True,
                          text=True)


def test_repository_is_lint_clean():
    out = _ruff(".")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr


def test_ruff_reports_a_planted_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")  # F401: unused import
    out = _ruff(bad)
    assert out.returncode == 1 and "F401" in out.stdout

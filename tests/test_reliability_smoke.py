"""experiments/reliability.py without its flwr runs: the fault table and the catalogue counts."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_reliability_script_reports_every_fault_and_every_case():
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "reliability.py"), "--skip-flwr"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"figures: resume_equal=None faults_handled=(\d+) bad_inputs=(\d+) clear_errors=(\d+) "
                         r"left_files=(\d+)", last)
    assert match, last
    handled, tried, clear, left = map(int, match.groups())
    assert handled == 5 and tried >= 30 and clear == tried and left == 0

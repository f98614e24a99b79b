"""The layers of pyproject.toml's import-linter contracts hold, and the core runs without Flower or Ray."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import tomli_w

REPO = Path(__file__).resolve().parents[1]
CORE = ["acp_flower.config", "acp_flower.options", "acp_flower.models", "acp_flower.codecs", "acp_flower.wire",
        "acp_flower.runtime", "acp_flower.metrics", "acp_flower.data", "strategies"]


def _lint(config: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache", str(config)], cwd=REPO, capture_output=True, text=True)


def test_import_contracts_are_kept():
    out = _lint(REPO / "pyproject.toml")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", out.stdout)


def test_the_layers_contract_sees_real_imports(tmp_path):
    # Prepare: the same contract with the runtime moved above the strategies that import it
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = config["contracts"][0]["layers"]
    layers.remove("acp_flower.runtime")
    layers.insert(layers.index("strategies"), "acp_flower.runtime")
    path = tmp_path / "pyproject.toml"
    path.write_text(tomli_w.dumps({"tool": {"importlinter": config}}))
    # Execute
    out = _lint(path)
    # Assert: the linter reports the strategies' imports of the runtime
    assert out.returncode != 0
    assert "strategies" in out.stdout and "is not allowed to import" in out.stdout


def test_core_imports_with_flwr_and_ray_blocked():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('flwr', 'ray'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {CORE!r}:\n"
        "    __import__(m)\n"
        "from acp_flower.runners.local import run_experiment\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

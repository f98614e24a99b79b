"""The core imports neither Flower nor Ray (drivers wrap it)."""

import subprocess
import sys

CORE = ["acp_flower.config", "acp_flower.models", "acp_flower.codecs", "acp_flower.wire", "acp_flower.runtime",
        "acp_flower.metrics", "acp_flower.data", "acp_flower.runners.local", "strategies"]


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
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

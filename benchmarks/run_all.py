"""Run every benchmark in this folder, one after another: `make bench`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

if __name__ == "__main__":
    failed = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name in ("run_all.py", "fleet_sim.py"):  # fleet_sim.py is a tool that drives a running control plane
            continue
        print(f"== {script.name}", flush=True)
        failed += subprocess.run([sys.executable, str(script)], check=False).returncode != 0
    sys.exit(1 if failed else 0)

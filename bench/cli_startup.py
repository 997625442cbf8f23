"""Start-up time of the command line: ``flowork-gateway --help`` and friends.

    .venv/bin/python bench/cli_startup.py [--runs 15]

Each command runs ``--runs`` times in a fresh process (like hyperfine); the table gives the
median wall time and its ratio to a bare ``python -c pass`` measured in the same run, so a
shared machine's drift cancels out. ``plugins`` loads the whole gateway (every plugin,
Falcon, peewee, eth_account) and is the reference for what ``--help`` avoids. The import
graph itself is asserted by tests/kernel/test_cli_ops.py; this only measures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from tests.support.procs import clean_environment, gateway_executable

GATEWAY = gateway_executable()


def median_seconds(command: list[str], runs: int, env: dict[str, str], cwd: str) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        env = clean_environment({"DATABASE_URL": f"sqlite:///{Path(cwd, 'gw.db').as_posix()}",
                                 "FLOWORK_KEY_FILE": str(Path(cwd, "key"))}, secret=None)
        rows = [
            ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
            ("flowork-gateway --help", [GATEWAY, "--help"]),
            ("flowork-gateway serve --help", [GATEWAY, "serve", "--help"]),
            ("flowork-gateway keygen --force", [GATEWAY, "keygen", "--force"]),
            ("flowork-gateway plugins (whole gateway)", [GATEWAY, "plugins"]),
        ]
        results = [(name, median_seconds(cmd, args.runs, env, cwd)) for name, cmd in rows]
    baseline = results[0][1]
    print(f"| command | median ms | ratio to bare python |  (runs={args.runs})")
    print("|---|---|---|")
    for name, seconds in results:
        print(f"| {name} | {seconds * 1000:.0f} | {seconds / baseline:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench [NAME ...]`: run every bench/bench_*.py (or the named ones), each in its own process.

Each benchmark prints ratios against a reference run in the same process, never absolute pass/fail timings.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    failed = []
    for name in names:
        script = HERE / f"bench_{name}.py"
        if not script.is_file():
            print(f"no benchmark named {name!r} ({script})", file=sys.stderr)
            failed.append(name)
            continue
        print(f"\n=== bench {name} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"=== {name}: exit {rc} in {time.perf_counter() - t0:.1f} s ===", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

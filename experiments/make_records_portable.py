"""Rewrite committed run records so they name files relative to the project root, not by
the absolute paths of the machine that made them (issue 18). Idempotent:

    python experiments/make_records_portable.py

Only path strings change (config.json's model/catalog/data, model cards' data_source,
benchmark JSONs); fingerprints and results do not involve them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the checkouts these records were made in: the project root, its ../shared, and
# temporary clones of the project (their catalog is the shipped one)
REWRITES = [
    (re.compile(r"/work/main/"), ""),
    (re.compile(r"/work/shared/"), "../shared/"),
    (re.compile(r"/tmp/s\d+/"), ""),
]


def main() -> None:
    files = subprocess.run(["git", "ls-files", "*.json"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        path = ROOT / name
        text = path.read_text()
        new = text
        for pattern, repl in REWRITES:
            new = pattern.sub(repl, new)
        if new != text:
            path.write_text(new)
            print("rewrote", name)


if __name__ == "__main__":
    main()

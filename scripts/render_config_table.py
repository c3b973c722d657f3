"""Rewrite the configuration table in README.md: `rgw-inference config`'s table (`make docs`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.config_table import config_table

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-table:start -->\n", "<!-- config-table:end -->"


def main() -> int:
    text = README.read_text()
    table = config_table()
    updated, count = re.subn(
        re.escape(START) + r".*?" + re.escape(END), lambda _: START + table + END, text, flags=re.S
    )
    if count != 1:
        sys.stderr.write("README.md: configuration table markers not found\n")
        return 1
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

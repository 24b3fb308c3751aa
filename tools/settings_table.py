"""Rewrite the README's configuration table from the settings registry (vast_llm._config).

python tools/settings_table.py          # rewrite README.md in place
python tools/settings_table.py --check  # exit 1 if the README's table is stale
"""

from __future__ import annotations

import pathlib
import sys

from vast_llm._config import settings_table

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def main() -> int:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    fresh = f"{head}{START}\n{settings_table()}\n{END}{tail}"
    if "--check" in sys.argv:
        return 0 if fresh == text else 1
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

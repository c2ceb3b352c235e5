"""Collects README.md and the pages of docs/ as tests: every code block of them runs, or is
checked, through Sybil (tests/doc_blocks.py says what happens to each kind of block)."""

import sys
from pathlib import Path

# The tests' own helpers live in tests/ (not a package), as pytest would put it on the path.
sys.path.insert(0, str(Path(__file__).parent / "tests"))

from doc_blocks import SYBIL  # noqa: E402

pytest_collect_file = SYBIL.pytest()

"""How many examples a Hypothesis fuzz test runs: its number in the suite, times ``MASANTE_FUZZ_SCALE``.

``make test`` runs each fuzz test with the count written beside it; ``make fuzz`` sets
``MASANTE_FUZZ_SCALE`` (default 20 there) to run the same properties longer. Only the
parsers' own errors may escape, whatever the count.
"""

from __future__ import annotations

import os


def examples(in_suite: int) -> int:
    scale = os.environ.get("MASANTE_FUZZ_SCALE", "1")
    if not scale.isdigit() or int(scale) < 1:
        raise ValueError(f"MASANTE_FUZZ_SCALE must be a whole number of at least 1, not {scale!r}")
    return in_suite * int(scale)

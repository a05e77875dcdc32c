"""rlm.memory: the peaks logged every step (``perf/memory_peak_gib``).

Run: ``python -m pytest tests/test_memory.py -q``
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

# In a new process: a test worker's peak may already be above anything the test holds.
_PEAKS = """
import numpy as np
from rlm.memory import memory_metrics, peak_resident_gib
before = peak_resident_gib()
held = np.ones(2**28 // 8)  # 256 MiB, touched
print(before, peak_resident_gib(), memory_metrics()["perf/memory_peak_gib"])
"""


def test_the_resident_peak_rises_with_what_the_process_holds():
    out = subprocess.run([sys.executable, "-c", _PEAKS], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    before, after, logged = map(float, out.split()[-3:])
    assert after - before > 0.24  # GiB
    assert logged >= after

"""Shared test set-up.

Tests use tiny models, for which OpenBLAS's thread wake-ups cost more than the maths: pin BLAS to one thread
(before NumPy is first imported) unless the caller chose otherwise.  Tests import tests/naive.py as a module.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

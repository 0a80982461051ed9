"""Shared test set-up: the helper modules in ``tests/helpers`` (generated data layouts, the
tutorial harness, the DDP worker, torch settings) are importable from every test folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

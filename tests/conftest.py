"""Test-wide set-up: must run before torch is imported."""
import os

# Idle OpenMP threads sleep instead of spinning (the CLI does the same); see automl_pipeline/cli.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

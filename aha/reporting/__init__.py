"""The parts of `aha report` (aha/report.py), one job per module."""

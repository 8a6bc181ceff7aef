"""Evaluation: physical and paper-compatible metrics, SPIDER's structure metrics, the per-case protocol
and the evaluation's report."""

"""The command-line tools: ``python -m custom.cli.<tool>`` (phantoms, samples, export, speed, benchmark)."""

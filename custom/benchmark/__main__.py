"""Command line of the side-by-side benchmark: ``python -m custom.benchmark run [--quick] --out DIR``."""

import fire

from custom.benchmark.run import run

if __name__ == "__main__":
    fire.Fire({"run": run}, serialize=lambda records: None)  # the results are in files, not printed

"""Command line of the side-by-side benchmark and the learning curves::

python -m custom.cli.benchmark run [--quick] --out DIR
python -m custom.cli.benchmark curves --variants psctnet,x2ct,spider --seconds 3600 --out DIR
python -m custom.cli.benchmark training_curve --log_dir eval --out DIR
"""

import fire
from custom.benchmark.curves import curves, training_curve
from custom.benchmark.run import run

if __name__ == "__main__":
    commands = {"run": run, "curves": curves, "training_curve": training_curve}
    fire.Fire(commands, serialize=lambda records: None)  # the results are in files, not printed

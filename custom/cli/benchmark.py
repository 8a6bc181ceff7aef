"""Command line of the side-by-side benchmark and the learning curves::

python -m custom.cli.benchmark run [--quick] --out DIR
python -m custom.cli.benchmark curves --methods psctnet,x2ct,spider --seconds 3600 --out DIR
python -m custom.cli.benchmark training_curve --log_dir eval --out DIR
"""

from custom.benchmark.curves import curves, training_curve
from custom.benchmark.run import run
from custom.cli import run_commands
from custom.errors import UserError

if __name__ == "__main__":
    commands = {"run": run, "curves": curves, "training_curve": training_curve}
    # the results are in files, not printed; an hour-long run keeps the traceback of anything but a user error
    run_commands(commands, (UserError,), serialize=lambda records: None)

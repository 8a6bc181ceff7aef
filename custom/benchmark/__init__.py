"""The side-by-side benchmark of PSCT-Net, its ablations and baselines (see :mod:`custom.benchmark.run`).

python -m custom.cli.benchmark run --quick --out benchmark/   # CPU, under 20 minutes on 2 cores
python -m custom.cli.benchmark run --out benchmark/           # the paper's 128^3 protocol, GPU
"""

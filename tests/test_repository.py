"""The promises the repository makes to a new user: two set-up commands, CI running the tests, the licence."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    main_job, tests = commands
    assert "torch==2.13.0" in main_job and "torch==2.13.0" in tests
    assert "pytest" in tests
    assert "monai.bundle run inference" in main_job  # the main job: inference with the shipped weights
    assert tests in ROOT.joinpath(".ci", "run").read_text().splitlines()


def test_mamba_ssm_is_only_an_optional_extra():
    project = tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]}
    assert {"monai", "torch", "numpy", "nibabel", "pydicom", "itk", "fire"} <= core
    assert "mamba-ssm" not in core
    assert any(d.startswith("mamba-ssm") for d in project["optional-dependencies"]["cuda"])


def test_licence_is_apache_2():
    assert ROOT.joinpath("LICENSE").read_text().split("\n", 2)[:2] == [
        " " * 33 + "Apache License",
        " " * 27 + "Version 2.0, January 2004",
    ]

"""The promises the repository makes: two set-up commands, CI running the tests, the licence, the house's shape."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

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


def _imports(path: Path) -> set[str]:
    """The ``custom`` modules a source file imports (top level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "custom"}


MAX_MODULE_LINES = 500
MAX_ROOMS = 12  # custom/'s entries besides __init__.py: about ten rooms, each one concept


def test_the_package_is_a_few_rooms_of_modules_under_500_lines():
    package = ROOT / "custom"
    entries = sorted(p.name for p in package.iterdir() if p.name not in ("__init__.py", "__pycache__"))
    assert len(entries) <= MAX_ROOMS, entries
    long = {
        str(p.relative_to(ROOT)): n
        for p in package.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long


@pytest.mark.parametrize(
    ("room", "forbidden"),
    [
        ("data", ("custom.metrics", "custom.outputs")),  # inputs never import output code
        ("metrics", ("custom.data",)),
        ("outputs", ("custom.data",)),
        ("phantom", ("custom.data", "custom.networks", "custom.training", "custom.metrics", "custom.outputs")),
        ("networks", ("custom.data", "custom.training", "custom.metrics", "custom.outputs")),
    ],
)
def test_rooms_import_only_downward(room, forbidden):
    offending = {
        str(path.relative_to(ROOT)): sorted(m for m in _imports(path) if m.startswith(forbidden))
        for path in (ROOT / "custom" / room).rglob("*.py")
    }
    assert not {path: modules for path, modules in offending.items() if modules}


def test_the_imaging_model_imports_only_itself_and_the_user_errors():
    imports = set().union(*(_imports(path) for path in (ROOT / "custom" / "imaging").rglob("*.py")))
    assert {m for m in imports if not m.startswith(("custom.imaging", "custom.errors"))} == set()


def test_no_library_module_imports_a_command_line():
    library = [path for path in (ROOT / "custom").rglob("*.py") if "cli" not in path.relative_to(ROOT).parts]
    offending = {
        str(path.relative_to(ROOT)) for path in library if any(m.startswith("custom.cli") for m in _imports(path))
    }
    assert not offending

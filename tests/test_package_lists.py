"""One package list: pyproject.toml's. environment.yml installs the project itself (so its list); the rules'
conda environment (workflow/envs/warmstart.yaml) cannot refer to the project by path, so it repeats the list,
and must repeat it exactly."""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pip_section(env_file: Path) -> list[str]:
    dependencies = yaml.safe_load(env_file.read_text())["dependencies"]
    return next(d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d)


def test_the_rules_conda_environment_lists_exactly_the_projects_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pip_section(REPO / "workflow" / "envs" / "warmstart.yaml") == project["dependencies"]


def test_the_conda_users_environment_installs_the_project_with_its_workflow_and_test_extras():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert pip_section(REPO / "environment.yml") == ["-e .[workflow,test]"]
    assert {"workflow", "test"} <= set(extras)

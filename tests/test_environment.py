"""The two descriptions of the project environment must not drift apart."""
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins(requirements):
    pins = {}
    for line in requirements:
        req = Requirement(line)
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"{line} is not an exact pin"
        pins[req.name.lower()] = next(iter(req.specifier)).version
    return pins


def test_environment_yml_pins_equal_pyproject_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = _pins([r for r in pip_section if not r.startswith("-e")])
    assert env_pins == _pins(_pyproject()["optional-dependencies"]["pinned"])
    assert "-e ." in pip_section


def test_pins_satisfy_the_library_ranges():
    pins = _pins(_pyproject()["optional-dependencies"]["pinned"])
    for line in _pyproject()["dependencies"]:
        req = Requirement(line)
        assert req.name.lower() in pins, f"{req.name} has a range but no pin"
        assert req.specifier.contains(pins[req.name.lower()]), f"pin {pins[req.name.lower()]} outside {line}"


def test_python_versions_agree():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert Requirement("python" + _pyproject()["requires-python"]).specifier.contains(python.split("=")[1] + ".0")

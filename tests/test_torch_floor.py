"""The torch floor in pyproject.toml covers every floor-sensitive torch API the library uses.

pyproject.toml lists them in `#   torch-api VERSION  TEXT  note` lines: the release that introduced
the API and the text that uses it in src/configaformer. No older torch can be installed here to run
the tests on the floor itself, so this test keeps the declaration honest instead: every listed API
is still used, and the declared floor is at least the newest of their releases.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
SOURCE = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "src" / "configaformer").rglob("*.py")))


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def floor_problems(pyproject: str, source: str) -> list[str]:
    """What is wrong with the torch floor declared in `pyproject` for the code in `source`."""
    apis = re.findall(r"^#\s+torch-api\s+(\d+\.\d+)\s+(\S+)", pyproject, re.M)
    floor = re.search(r'^\s*"torch>=([\d.]+)"', pyproject, re.M)
    if not apis or not floor:
        return ["pyproject.toml needs a \"torch>=X\" dependency and `#   torch-api VERSION TEXT` lines"]
    problems = [f"{text} is listed but no longer used in src/configaformer" for _, text in apis if text not in source]
    problems += [f"torch>={floor.group(1)} is below {first}, the first release with {text}"
                 for first, text in apis if version(floor.group(1)) < version(first)]
    return problems


def test_the_declared_torch_floor_covers_every_listed_api():
    assert floor_problems(PYPROJECT, SOURCE) == []


def test_the_check_catches_a_floor_below_an_api_and_a_stale_list():
    too_low = re.sub(r'"torch>=[\d.]+"', '"torch>=2.4"', PYPROJECT)  # what pyproject.toml said before
    assert floor_problems(too_low, SOURCE) == ["torch>=2.4 is below 2.5, the first release with enable_gqa="]
    assert floor_problems(PYPROJECT, SOURCE.replace("enable_gqa=", "")) == [
        "enable_gqa= is listed but no longer used in src/configaformer"]

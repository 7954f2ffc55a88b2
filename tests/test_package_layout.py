"""The arrows between packages run one way: the CLI and the tools (train, parallel, data) use the
model; train uses parallel, never back; nothing on the model side imports a tool. Read from the
source (every import statement, those inside functions too), so a lazy import cannot hide."""

import ast
from pathlib import Path

import pytest

import configaformer

ROOT = Path(configaformer.__file__).parent
TOOLS = ("train", "parallel", "data", "search", "cli", "__main__")


def imported_modules(path: Path) -> set[str]:
    """The configaformer modules `path` imports, as dotted names relative to the package."""
    module = path.relative_to(ROOT).with_suffix("").parts
    package = module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + tuple(node.module.split(".") if node.module else ()))
            elif (node.module or "").startswith("configaformer"):
                target = node.module.removeprefix("configaformer").lstrip(".")
            else:
                continue
            found |= {f"{target}.{alias.name}".lstrip(".") for alias in node.names} | {target}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("configaformer").lstrip(".") for a in node.names
                      if a.name.startswith("configaformer")}
    return {name for name in found if name}


def uses(path: Path, packages) -> list[str]:
    return sorted(name for name in imported_modules(path) if name.split(".")[0] in packages)


def sources(*under: str):
    for path in sorted(ROOT.rglob("*.py")):
        top = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if (top in under) if under else (top not in TOOLS):
            yield path


def test_the_import_reader_sees_relative_absolute_and_lazy_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "parallel").mkdir()
    (tmp_path / "parallel" / "x.py").write_text("from ..train.checkpoint import save\nimport configaformer.data\n"
                                                "def f():\n    from . import base\n")
    assert imported_modules(tmp_path / "parallel" / "x.py") >= {"train.checkpoint.save", "data", "parallel.base"}


@pytest.mark.parametrize("path", list(sources("parallel")), ids=lambda p: p.name)
def test_parallel_never_imports_train(path):
    assert uses(path, ("train", "cli")) == []


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_model_side_imports_no_tool(path):
    assert uses(path, TOOLS) == []

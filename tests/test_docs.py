"""The documentation stays true: every relative link in README.md and docs/*.md reaches a file
(and a heading, for #anchors), and every ```python block runs as written, except a block the line
before marks `<!-- not run: REASON -->`."""

import os
import re
from pathlib import Path

import pytest
import torch

import configaformer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
BLOCK = re.compile(r"(?:^(<!-- not run: .+? -->)\n)?^```python\n(.*?)^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def links():
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            if not re.match(r"[a-z]+:", target):
                yield pytest.param(page, target, id=f"{page.name}:{target}")


@pytest.mark.parametrize("page, target", list(links()))
def test_every_relative_link_reaches_its_file_and_heading(page, target):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.name}: {target} names a missing file"
    if anchor:
        assert anchor in anchors(dest), f"{page.name}: {target}: no such heading in {dest.name}"


def blocks():
    for page in PAGES:
        for i, (mark, code) in enumerate(BLOCK.findall(page.read_text(encoding="utf-8"))):
            yield pytest.param(page, code, marks=pytest.mark.skip(reason=mark) if mark else (),
                               id=f"{page.name}:{i}")


@pytest.fixture
def scope(stdlib_data, tmp_path, monkeypatch, scratch_registry):
    """Names the snippets take as given: a small causal model with a vocabulary head and a
    3-class head, a batch of ids, their padding mask and targets, a prepared data/stdlib."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stdlib").symlink_to(stdlib_data)
    monkeypatch.chdir(tmp_path)
    model = configaformer.Transformer({"dim_model": 32, "vocab_size": 258, "dim_rope": 4, "classifiers": [258, 3],
                                       "layers": [{"type": "Attention", "num_heads": 4}, {"type": "FFN"}]})
    ids = torch.randint(0, 258, (2, 12))
    return {"torch": torch, "configaformer": configaformer, "model": model, "ids": ids,
            "mask": torch.ones_like(ids, dtype=torch.bool), "prompt_ids": ids[:1, :4],
            "lm_targets": torch.randint(0, 258, (2, 12)), "kind_targets": torch.randint(0, 3, (2, 12))}


@pytest.mark.parametrize("page, code", list(blocks()))
def test_every_python_example_runs(page, code, scope):
    exec(compile(code, f"{page.name}:example", "exec"), scope)


def test_the_block_pattern_sees_marks_and_blocks():
    text = "<!-- not run: why -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    assert BLOCK.findall(text) == [("<!-- not run: why -->", "x = 1\n"), ("", "y = 2\n")]
    assert os.path.basename(str(PAGES[0])) == "README.md" and len(PAGES) > 1

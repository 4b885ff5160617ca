"""Runs the sepconv snippets of docs/migration.md, so the guide stays true to the code."""
import pathlib
import re

import pytest

import sepconv as sc

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "migration.md"
BLOCKS = [block for block in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
          if "import sepconv as sc" in block]


def test_the_guide_has_sepconv_snippets():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet_runs(index, monkeypatch):
    monkeypatch.chdir(GUIDE.parent.parent)  # the guide's paths are relative to the repository
    sc.reset_default_graph()
    exec(compile(BLOCKS[index], f"{GUIDE.name}[{index}]", "exec"), {})

"""Every ```python block of README.md and docs/*.md runs as written.

Blocks of one file run in order in one fresh namespace, from the repository root (where the
docs' commands and relative paths are meant to run). A block preceded by the line
``<!-- not-run: reason -->`` is not run (for what needs a GPU or torchrun; use it sparingly).
Tracebacks point at the markdown file and line.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S.*?)\s*-->")
FENCE = re.compile(r"^(\s*)```")

# The README's and quickstart's blocks take about 6 s and 2 s on the 2-core development machine,
# training.md's about a minute (it trains a small PFN).


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the block's first code line in its file
    code: str
    not_run: str | None  # the reason given in a preceding <!-- not-run: ... --> comment


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a markdown text, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            indent = len(lines[i]) - len(lines[i].lstrip())
            end = next((j for j in range(i + 1, len(lines)) if FENCE.match(lines[j])), None)
            if end is None:
                raise ValueError(f"the ```python block at line {i + 1} is never closed")
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.fullmatch(previous.strip())
            code = "\n".join(line[indent:] for line in lines[i + 1 : end])
            blocks.append(Block(i + 2, code, marker.group(1) if marker else None))
            i = end
        i += 1
    return blocks


def run_blocks(path: Path) -> int:
    """Run the runnable blocks of ``path`` in order in one fresh module (registered while they
    run, so that classes they define pickle); returns how many ran."""
    module = types.ModuleType("docs_" + re.sub(r"\W", "_", path.stem))
    sys.modules[module.__name__] = module
    ran = 0
    try:
        for block in python_blocks(path.read_text()):
            if block.not_run is None:
                # padded so that a traceback's line numbers are the markdown file's
                exec(compile("\n" * (block.line - 1) + block.code, str(path), "exec"), module.__dict__)
                ran += 1
    finally:
        del sys.modules[module.__name__]
    return ran


def doc_params() -> list[Any]:
    params = []
    for path in DOCS:
        name = path.relative_to(ROOT).as_posix()
        if not python_blocks(path.read_text()):
            continue
        params.append(pytest.param(path, id=name))
    return params


@pytest.mark.parametrize("path", doc_params())
def test_python_blocks_run_as_written(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert run_blocks(path) >= 1


def test_the_docs_have_python_blocks_to_run():
    names = {p.id for p in doc_params()}
    assert {"README.md", "docs/quickstart.md", "docs/training.md"} <= names


def test_blocks_are_extracted_in_order_with_markers_and_line_numbers():
    text = "\n".join(
        [
            "# t",  # 1
            "```python",  # 2
            "a = 1",  # 3
            "```",  # 4
            "```bash",  # 5
            "make test",  # 6
            "```",  # 7
            "<!-- not-run: needs a GPU -->",  # 8
            "",  # 9
            "```python",  # 10
            "import torch; torch.ones(1).cuda()",  # 11
            "```",  # 12
            "- item:",  # 13
            "  ```python",  # 14
            "  b = a + 1",  # 15
            "  ```",  # 16
        ]
    )
    blocks = python_blocks(text)
    assert [(b.line, b.code, b.not_run) for b in blocks] == [
        (3, "a = 1", None),
        (11, "import torch; torch.ones(1).cuda()", "needs a GPU"),
        (15, "b = a + 1", None),
    ]
    with pytest.raises(ValueError, match="line 1 is never closed"):
        python_blocks("```python\nx = 1\n")


def test_a_failing_block_points_at_its_markdown_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n\n```python\nx = 1\ny = x / 0\n```\n")
    with pytest.raises(ZeroDivisionError) as error:
        run_blocks(doc)
    assert error.traceback[-1].path == doc and error.traceback[-1].lineno + 1 == 5


def test_blocks_of_one_file_share_a_namespace_and_skip_marked_ones(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```python\nx = 2\n```\n<!-- not-run: torchrun only -->\n```python\nraise RuntimeError\n```\n"
        "```python\nimport pickle\n\nclass Point:\n    pass\n\nassert x == 2\nsaved = pickle.dumps(Point())\n```\n"
    )
    assert run_blocks(doc) == 2

"""`make notebooks` turns each `# %%` lesson script into a notebook with the same cells (jupytext).

One lesson is converted here, as `make notebooks` converts them all: the notebook must hold one cell per
`# %%` marker, markdown where the script says `[markdown]`, with the script's code unchanged.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LESSON = REPO / "lessons" / "01_forward_process.py"


def test_a_lesson_converts_to_a_notebook_with_the_same_cells(tmp_path):
    notebook_path = tmp_path / "01_forward_process.ipynb"
    result = subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "--output", str(notebook_path),
                             str(LESSON)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    notebook = json.loads(notebook_path.read_text())
    assert notebook["nbformat"] == 4
    source = LESSON.read_text()
    markers = re.findall(r"^# %%(.*)$", source, re.MULTILINE)
    cells = notebook["cells"]
    assert len(cells) == len(markers)
    assert [c["cell_type"] for c in cells] == ["markdown" if "[markdown]" in m else "code" for m in markers]
    # the code of every code cell is the script's code, line for line
    script_code = [chunk.split("\n", 1)[1].strip() for chunk in re.split(r"^(?=# %%)", source, flags=re.MULTILINE)
                   if chunk.startswith("# %%") and "[markdown]" not in chunk.split("\n", 1)[0]]
    notebook_code = ["".join(c["source"]).strip() for c in cells if c["cell_type"] == "code"]
    assert notebook_code == script_code
    # markdown cells lose the comment marks: the lesson's title is a heading
    assert "".join(cells[0]["source"]).startswith("# Lesson 01")

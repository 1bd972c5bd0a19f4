"""What ``pip install .`` ships: every folder of the package with Python files
must be a regular package, or setup.py's ``find_packages`` leaves it out of a
non-editable install (while an editable one, which the rest of the suite
runs from, still imports it)."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_with_python_files_is_shipped():
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "delayconv").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    shipped = set(find_packages(where=str(ROOT), include=["delayconv", "delayconv.*"]))

    assert "delayconv.demo" in folders
    assert folders <= shipped, f"not shipped by pip install .: {folders - shipped}"

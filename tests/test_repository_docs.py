"""Everything the repository cites is in the repository, and its docs name no machine's paths.

A user clones the repository and nothing else, so a docstring or a doc that sends them to a
document we do not ship is a dead end. Documents are the upper-case `NAME.md` files (README.md,
docs/*.md); lower-case `.md` names are files the code writes (a run's report.md).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("atlas", "tests", "docs", "scripts", ".ci")
TOP_FILES = ("README.md", "Makefile", "train.sh", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".sbatch", ".txt", ""}
DOCUMENT = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[A-Z][A-Z0-9_]*\.md)\b")
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|home|root|Users|mnt|opt|srv)/[\w./-]+")


def repository_files() -> list[Path]:
    files = [ROOT / name for name in TOP_FILES if (ROOT / name).is_file()]
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def cited_documents(text: str) -> list[str]:
    return DOCUMENT.findall(text)


def resolves(cited: str, source: Path) -> bool:
    """`docs/X.md` from the root or beside the citing file; a bare `X.md` anywhere we ship."""
    if "/" in cited:
        return (ROOT / cited).is_file() or (source.parent / cited).is_file()
    return any(ROOT.glob(f"**/{cited}"))


def test_every_cited_document_is_in_the_repository() -> None:
    missing = []
    for path in repository_files():
        if path == Path(__file__).resolve():
            continue  # its own examples of what is caught
        for cited in cited_documents(path.read_text(errors="replace")):
            if not resolves(cited, path):
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "documents that are not in the repository:\n" + "\n".join(missing)


def test_no_machine_path_in_the_docs() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [
        f"{doc.relative_to(ROOT)}: {match}"
        for doc in docs
        for match in MACHINE_PATH.findall(doc.read_text())
    ]
    assert not found, "machine-specific paths in the docs:\n" + "\n".join(found)


def test_the_checks_see_what_they_look_for() -> None:
    text = "see FORMAT.md §2, docs/LIBERO.md, the run's report.md and ../docs/NOPE.md"
    assert cited_documents(text) == ["FORMAT.md", "docs/LIBERO.md", "../docs/NOPE.md"]
    here = ROOT / "atlas" / "x.py"
    assert resolves("docs/LIBERO.md", here) and not resolves("FORMAT.md", here)
    assert MACHINE_PATH.findall("python at /work/main/.venv/bin/python, not ~/work/x or a/b")
    assert not MACHINE_PATH.findall("~/.cache/atlas and runs/debug/final")

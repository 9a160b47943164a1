"""The README's configuration reference is generated from the schema and must stay current."""

from __future__ import annotations

from pathlib import Path

from atlas.config.reference import BEGIN, END, markdown, rows

ROOT = Path(__file__).resolve().parents[2]


def test_every_config_key_is_documented_in_the_schema() -> None:
    undocumented = [key for key, _, _, desc in rows() if not desc.strip()]
    assert not undocumented, f"add a comment beside these fields in schema.py: {undocumented}"


def test_readme_reference_matches_schema() -> None:
    text = (ROOT / "README.md").read_text()
    assert BEGIN in text and END in text, "README lacks the config reference markers"
    current = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert current == markdown().strip(), (
        "README config reference is stale: regenerate it with "
        "`python -m atlas.config.reference` and paste it between the markers"
    )

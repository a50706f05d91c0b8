"""Every path a doc or a code comment cites exists in the repository, and none points outside
it (a user who clones the project has only the repository)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "trainers", "analysis", "contract", "benchmarks", "tests", "examples")
DOCS = [
    ROOT / "README.md",
    ROOT / "CLAIMS.md",
    ROOT / "BENCHMARKS.md",
    *(ROOT / "docs").glob("*.md"),
]
TOP = "docs|examples|service|trainers|analysis|contract|tests|benchmarks|docker|constraints|\\.ci"
# a repository path: top-level folder, then path parts, ending in a file name with an extension
CITED = re.compile(rf"(?<![\w./-])((?:{TOP})/[\w./-]*\.(?:md|py|yaml|yml|toml|txt|json|sh))\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
OUTSIDE = re.compile(r"\.\./shared|/work/shared|shared/docs")


def _sources() -> list[Path]:
    files = [p for p in DOCS if p.exists()]
    for package in PACKAGES:
        files += [p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts]
    files += list((ROOT / "examples").glob("*.yaml")) + list((ROOT / "docker").glob("*"))
    return [p for p in files if p.is_file()]


def _cited(path: Path) -> set[str]:
    text = path.read_text(errors="replace")
    found = set(CITED.findall(text))
    if path.suffix == ".md":
        for target in LINK.findall(text):
            if "://" not in target and not target.startswith("mailto:"):
                found.add(str((path.parent / target).resolve().relative_to(ROOT)))
    return found


def test_every_cited_path_exists():
    missing = []
    for source in _sources():
        if source.name == "test_doc_paths.py":
            continue  # its own example of a missing path
        for cited in _cited(source):
            if any(ch in cited for ch in "*{<"):
                continue  # a pattern or placeholder, not a file
            if not (ROOT / cited).exists():
                missing.append(f"{source.relative_to(ROOT)} cites {cited}")
    assert not missing, "\n".join(sorted(missing))


def test_nothing_cites_a_path_outside_the_repository():
    outside = [
        f"{source.relative_to(ROOT)}:{n}"
        for source in _sources()
        if source.name != "test_doc_paths.py"
        for n, line in enumerate(source.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not outside, outside


def test_the_checker_catches_a_missing_path(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see `docs/no_such_page.md` and [this](docs/claims.md)")
    assert "docs/no_such_page.md" in set(CITED.findall(doc.read_text()))
    assert not (ROOT / "docs/no_such_page.md").exists()

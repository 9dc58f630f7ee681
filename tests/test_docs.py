"""The documentation's links hold: every relative link in README.md and docs/**/*.md names an
existing file (and, with `#anchor`, an existing heading, slugged as GitHub does), every
`docs/....md` path the code and sweep files name exists, and every `docs/science.md §N` they
cite is a numbered section there. Plain text only: no project package is imported."""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "reports", "mlartifacts", "mlruns",
             "test-artifacts", "coord_check"}

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
DOC_PATH = re.compile(r"\bdocs/\w[\w./-]*?\.md\b")
SCIENCE_SECTION = re.compile(r"docs/science\.md\)?\s*§\s*(\d+)")


def project_files(*suffixes: str) -> list[Path]:
    """Files of the project with these suffixes: not hidden, not a virtualenv, not outputs."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not d.endswith(".egg-info") and not (Path(folder, d) / "pyvenv.cfg").exists())
        found += [Path(folder, f) for f in sorted(files) if f.endswith(suffixes)]
    return found


def markdown_files() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def prose(text: str) -> str:
    """The text with fenced code blocks and inline code blanked (same length, same line breaks),
    so that a `#` comment or a [x](y) inside code counts as neither heading nor link."""
    out, fence = [], None
    for line in text.split("\n"):
        marker = line.lstrip()[:3]
        if fence is None and marker in ("```", "~~~"):
            fence = marker
            out.append("")
        elif fence is not None:
            if marker == fence:
                fence = None
            out.append("")
        else:
            out.append(re.sub(r"`+[^`]*`+", lambda m: " " * len(m.group()), line))
    return "\n".join(out)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters, marks, digits,
    `_`, `-` and spaces kept), spaces to hyphens."""
    text = re.sub(r"`", "", heading).lower()
    kept = "".join(c for c in text if c in " -" or c.isalnum()
                   or unicodedata.category(c) in ("Mn", "Mc", "Me", "Pc"))
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file (a repeated slug gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    fence = None
    for line in path.read_text(encoding="utf-8").split("\n"):
        marker = line.lstrip()[:3]
        if marker in ("```", "~~~") and fence in (None, marker):
            fence = None if fence else marker
            continue
        match = HEADING.match(line) if fence is None else None
        if match:
            slug = github_slug(match.group(2))
            out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return out


def broken_links(md: Path) -> list[str]:
    text = prose(md.read_text(encoding="utf-8"))
    problems = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:
            continue
        where = f"{md.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        if not dest.exists():
            problems.append(f"{where}: {target}: no file {path_part}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: {target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def test_github_slugs():
    assert github_slug("`scalelab run`") == "scalelab-run"
    assert github_slug("Resuming, duplicates, failures") == "resuming-duplicates-failures"
    assert github_slug("4. The µP baseline") == "4-the-µp-baseline"
    assert github_slug("A tour: train → sweep → run") == "a-tour-train--sweep--run"
    assert github_slug("resources and `gpu: auto`") == "resources-and-gpu-auto"


def test_code_is_not_prose():
    text = "# title\n```bash\n# not a heading [a](missing.md)\n```\nsee `[b](missing.md)` and [c](x.md)\n"
    assert [m.group(1) for m in LINK.finditer(prose(text))] == ["x.md"]


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md):
    problems = broken_links(md)
    assert not problems, "broken links (fix the link or the heading):\n" + "\n".join(problems)


def test_doc_paths_named_in_code_exist():
    science = anchors(ROOT / "docs" / "science.md")
    numbered = {slug.split("-")[0] for slug in science if re.match(r"\d+-", slug)}
    problems = []
    for path in project_files(".py", ".yaml", ".yml", ".md"):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        for match in DOC_PATH.finditer(text):
            if path.suffix in (".py", ".yaml", ".yml") and not (ROOT / match.group()).exists():
                problems.append(f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()} does not exist")
        for match in SCIENCE_SECTION.finditer(text):
            if match.group(1) not in numbered:
                problems.append(f"{name}:{text.count(chr(10), 0, match.start()) + 1}: docs/science.md "
                                f"has no section §{match.group(1)} (it has §{', §'.join(sorted(numbered))})")
    assert not problems, "\n".join(problems)


def test_no_reference_to_a_file_outside_the_repository():
    """Section numbers of the science are cited from docs/science.md, which is in the repository."""
    stale = [f"{p.relative_to(ROOT)}" for p in project_files(".py", ".yaml", ".yml", ".md")
             if p != Path(__file__).resolve() and "REFERENCE" + ".md" in p.read_text(encoding="utf-8")]
    assert not stale, f"these files cite REFERENCE.md; cite docs/science.md (same § numbers): {stale}"

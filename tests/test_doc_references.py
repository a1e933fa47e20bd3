"""Every section reference in the repository resolves inside it.

Code and docs cite the method reference as ``docs/method.md §x.y`` (``method.md §x.y`` inside docs/,
or a bare ``§x.y`` continuing a list such as ``§1.1, §7.3`` or a range ``§3.1–3.3``). This test
scans every tracked (or new, not ignored) .py/.sh/.md file and fails

* when a cited section has no heading in docs/method.md (``## 3. Losses``, ``### 3.1 …``);
* when a file still refers to the old out-of-repository specification by name, or to a path
  outside the repository (``../shared``, ``/work/…``).

It reads ~150 small files and runs in a few milliseconds.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
SUFFIXES = (".py", ".sh", ".md")
SKIP_DIRS = {".git", ".venv", "runs", "__pycache__", "datasets", "node_modules"}

HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
# §x.y, optionally a range §x.y–z / §x.y–x.z (en dash or hyphen); "§ 3" tolerated.
CITATION = re.compile(r"§\s?(\d+(?:\.\d+)*)(?:[–-](\d+(?:\.\d+)*))?")
OLD_NAME = re.compile(r"\bSPEC\b")
OUTSIDE = re.compile(r"\.\./+shared\b|/work/")


def repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files with a scanned suffix (a plain walk without git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True, timeout=30).stdout
        names = sorted({n for n in out.decode("utf-8").split("\0") if n})
        paths = [ROOT / n for n in names]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]
    this = Path(__file__).resolve()
    return [p for p in paths if p.suffix in SUFFIXES and p.is_file() and p.resolve() != this]


def method_sections() -> set[str]:
    return set(HEADING.findall(METHOD.read_text(encoding="utf-8")))


def expand(first: str, last: str | None) -> list[str]:
    """The sections a citation names: ``3.1`` → [3.1]; ``3.1``–``3`` or ``3.1``–``3.3`` → [3.1, 3.2, 3.3]."""
    if not last:
        return [first]
    head, _, tail = first.rpartition(".")
    end = last.rpartition(".")[2] if "." in last else last
    if "." in last and last.rpartition(".")[0] != head:
        return [first, last]  # a range across sections: check both ends
    prefix = f"{head}." if head else ""
    return [f"{prefix}{i}" for i in range(int(tail), int(end) + 1)] or [first, last]


def citations(text: str) -> list[tuple[int, str]]:
    found = []
    for match in CITATION.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.extend((line, s) for s in expand(match.group(1), match.group(2)))
    return found


def test_expand_and_citation_forms():
    assert expand("3.1", None) == ["3.1"]
    assert expand("3.1", "3") == ["3.1", "3.2", "3.3"]
    assert expand("4.1", "4.2") == ["4.1", "4.2"]
    assert expand("11.12", "13") == ["11.12", "11.13"]
    text = "see docs/method.md §1.1, §7.3 and §3.1–3.2.\nAlso (§11.12–13); §8."
    assert citations(text) == [(1, "1.1"), (1, "7.3"), (1, "3.1"), (1, "3.2"), (2, "11.12"), (2, "11.13"), (2, "8")]


def test_method_reference_has_the_top_level_sections():
    sections = method_sections()
    assert {str(i) for i in range(1, 13)} <= sections, sorted(sections)


def test_every_cited_section_exists():
    sections = method_sections()
    missing = []
    for path in repository_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        missing += [f"{path.relative_to(ROOT)}:{line}: §{s}" for line, s in citations(text) if s not in sections]
    assert not missing, "sections cited but not headings of docs/method.md:\n" + "\n".join(missing)


def test_no_reference_points_outside_the_repository():
    bad = []
    for path in repository_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OLD_NAME.search(line) or OUTSIDE.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not bad, ("references that do not resolve inside the repository (cite docs/method.md §x.y; "
                     "no paths outside the repository):\n" + "\n".join(bad))


# `path.py` or `path.py:name` (name, or Class.method: its first part) in the Markdown docs
CODE_REF = re.compile(r"`((?:segmentation|classification|utils|data|bench|tests|scripts)/[\w/.-]+?\.(?:py|sh))"
                      r"(?::([A-Za-z_]\w*)(?:\.\w+)*)?")


def defines(text: str, name: str) -> bool:
    return re.search(rf"^\s*(?:def|class|async def)\s+{name}\b|^\s*{name}\s*[:=(]|^{name}\(\)\s*{{", text,
                     re.MULTILINE) is not None


def test_docs_name_only_files_and_functions_that_exist():
    """The code map and the guides name ``file.py:function``: a renamed or moved function fails here."""
    stale = []
    for path in repository_files():
        if path.suffix != ".md":
            continue
        text = path.read_text(encoding="utf-8")
        for match in CODE_REF.finditer(text):
            target, name = ROOT / match.group(1), match.group(2)
            line = text.count("\n", 0, match.start()) + 1
            if not target.is_file():
                stale.append(f"{path.relative_to(ROOT)}:{line}: {match.group(1)} does not exist")
            elif name and not defines(target.read_text(encoding="utf-8"), name):
                stale.append(f"{path.relative_to(ROOT)}:{line}: {match.group(1)} defines no {name}")
    assert not stale, "\n".join(stale)


def test_defines_by_hand():
    text = "def run(x):\n    pass\nclass Trainer:\n    def fit(self):\n        ...\nTASKS = {}\nrun_done() {\n"
    assert defines(text, "run") and defines(text, "Trainer") and defines(text, "fit") and defines(text, "TASKS")
    assert defines(text, "run_done") and not defines(text, "walk")

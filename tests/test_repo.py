"""The repository stands alone: a user's clone has nothing beside it."""
import re
import subprocess

import pytest

from support import ROOT

# built from parts so this file does not match itself
_OUTSIDE = re.compile(r"(\.\./|parent\s*(/|\.)\s*[\"']?)" + "sha" + "red\\b")


def _tracked_files():
    p = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"not a git checkout ({p.stderr.decode().strip()}): cannot list tracked files")
    return [ROOT / name for name in p.stdout.decode().split("\0") if name]


def test_no_tracked_file_refers_to_a_folder_beside_the_clone():
    offenders = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not offenders, "these refer to a folder outside the repository:\n" + "\n".join(offenders)


def test_cited_design_document_exists():
    assert (ROOT / "docs" / "DESIGN.md").is_file()
    citing = [p for p in _tracked_files() if p.suffix in (".py", ".sh", ".txt", ".md", ".toml")
              and p.is_file() and p.name != "test_repo.py" and "DESIGN.md" in p.read_text(errors="replace")]
    for path in citing:
        for line in path.read_text(errors="replace").splitlines():
            for m in re.finditer(r"[\w./-]*DESIGN\.md", line):
                assert m.group(0).endswith("docs/DESIGN.md") or path.parent.name == "docs", \
                    f"{path.relative_to(ROOT)} cites {m.group(0)!r}; the design document is docs/DESIGN.md"


def test_shipped_data_sets_are_complete():
    import csv

    with open(ROOT / "datasets" / "co2_emissions_canada.csv", newline="") as f:
        assert sum(1 for _ in csv.reader(f)) - 1 == 7385
    with open(ROOT / "datasets" / "zoo.csv", newline="") as f:
        assert sum(1 for _ in csv.reader(f)) - 1 == 101

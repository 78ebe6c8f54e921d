"""The docs stay usable: the generated spec reference matches spec.py, every relative link
in the README and docs/ points to a file that exists, every docs page is reachable from
the README, and the README stays a front door. In-process except the generator, which
runs as the command a contributor runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "scripts" / "spec_reference.py"
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _generator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True, cwd=ROOT)


def broken_links(page: Path) -> list[str]:
    """Relative link targets in ``page`` (outside code blocks, anchors dropped) that do not exist."""
    text = FENCE.sub("", page.read_text())
    targets = [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    return [t for t in targets if t and not (page.parent / t).exists()]


def test_spec_reference_is_what_the_generator_writes():
    result = _generator("--check")
    assert result.returncode == 0, result.stderr + "\n(run: python scripts/spec_reference.py)"


def test_the_check_fails_on_a_stale_page_and_passes_once_regenerated(tmp_path):
    page = tmp_path / "spec.md"
    assert _generator("--check", "--page", str(page)).returncode == 1  # missing
    assert _generator("--page", str(page)).returncode == 0
    assert _generator("--check", "--page", str(page)).returncode == 0
    page.write_text(page.read_text().replace("`training.holdout_days`", "`training.holdout`"))
    stale = _generator("--check", "--page", str(page))
    assert stale.returncode == 1 and "stale" in stale.stderr


def test_spec_reference_lists_nested_fields_with_their_yaml_paths():
    text = (ROOT / "docs" / "spec.md").read_text()
    for path in ("training.holdout_days", "sources.<name>.join.keys", "variants[].search.space.<hyperparameter>.low",
                 "monitoring.retrain.cooldown_days", "execution.timeouts.train"):
        assert f"| `{path}` |" in text, path


def test_every_relative_link_points_to_an_existing_file():
    broken = {str(p.relative_to(ROOT)): b for p in PAGES if (b := broken_links(p))}
    assert broken == {}


def test_the_link_check_sees_a_broken_link_and_ignores_urls_anchors_and_code(tmp_path):
    (tmp_path / "there.md").write_text("")
    page = tmp_path / "page.md"
    page.write_text("[a](there.md#x) [b](missing.md) [c](https://example.com/x.md) [d](#top)\n"
                    "```\n[e](in-code.md)\n```\n")
    assert broken_links(page) == ["missing.md"]


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in (ROOT / "docs").glob("*.md") if f"(docs/{p.name}" not in readme]
    assert unlinked == []


def test_readme_is_a_front_door_of_at_most_220_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, len(lines)

"""The documentation matches the code: the generated config reference, links between docs, make targets, commands."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# The budget for the README; everything else lives in docs/.
README_MAX_BYTES = 10_000

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _config_reference() -> ModuleType:
    # tools/ is not a package (it is not installed): load the script by its path.
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "tools" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a document's headings (github-slugger: lowercase, punctuation dropped, spaces to
    hyphens, -1, -2, ... for repeats)."""
    seen: dict[str, int] = {}
    for line in _prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2)).replace("`", "").replace("*", "")
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of a Markdown file whose file or anchor does not exist (paths relative to root)."""
    problems = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked offline
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.relative_to(root)}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
                problems.append(f"{path.relative_to(root)}: {target}: no heading with that anchor in {linked.name}")
    return problems


def test_configuration_reference_is_generated_from_the_models() -> None:
    reference = _config_reference()
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference.render(), "docs/configuration.md differs from the config models: run `make docs`"


def test_a_changed_description_makes_the_reference_out_of_date(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _config_reference()
    assert reference.main(["--check"]) == 0
    path, module, name = reference.MODELS[0]
    model = getattr(importlib.import_module(module), name)
    field = model.model_fields["termination_protection"]
    monkeypatch.setattr(field, "description", "a meaning nobody wrote into docs/configuration.md")
    assert reference.main(["--check"]) == 1
    assert "a meaning nobody wrote into docs/configuration.md" in reference.render()


def test_a_key_without_description_is_refused() -> None:
    class Undocumented(BaseModel):
        documented: int = Field(description="has one")
        bare: int

    with pytest.raises(ValueError, match="bare has no description"):
        _config_reference()._rows(Undocumented, "section.", "tests.Undocumented")


def test_reference_lists_every_key_of_the_committed_files() -> None:
    # Each top-level key and section key of the committed TOML files appears in the reference.
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for path in [*(ROOT / "config").glob("*.toml"), *(ROOT / "config" / "ci").glob("*.toml")]:
        for key, value in tomllib.loads(path.read_text(encoding="utf-8")).items():
            keys = [f"{key}.{sub}" for sub in value] if isinstance(value, dict) else [key]
            for dotted in keys:
                assert f"| `{dotted}` |" in text, f"{path.relative_to(ROOT)}: {dotted} is not in docs/configuration.md"


def test_security_page_says_who_reads_recordings_and_where_reads_are_logged() -> None:
    # Issue 12: the security documentation states both; the README links to it.
    security = anchors((ROOT / "docs" / "security.md").read_text(encoding="utf-8"))
    assert {"who-can-read-a-recording", "where-reads-are-logged"} <= security
    assert "docs/security.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_stays_short() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    assert broken_links(doc) == []


def test_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Some `code` heading, twice\n\n## Some code heading twice\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Doc\n\n[ok](other.md#some-code-heading-twice-1) [ok](#doc) `[skipped](nowhere.md)`\n"
        "[gone](missing.md) [bad anchor](other.md#nope) [bad here](#nowhere)\n"
    )
    assert broken_links(doc, tmp_path) == [
        "doc.md: missing.md: no such file",
        "doc.md: other.md#nope: no heading with that anchor in other.md",
        "doc.md: #nowhere: no heading with that anchor in doc.md",
    ]


def _code(text: str) -> list[str]:
    """Inline code spans and the lines of fenced code blocks: where commands are written."""
    fenced, code = False, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            code.append(line)
        else:
            code += [span.strip("`") for span in CODE_SPAN.findall(line)]
    return code


def _make_targets() -> dict[str, str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in re.finditer(r"^([a-z][a-z-]*):(?!=)(.*)$", makefile, re.MULTILINE)}


def test_every_make_target_the_docs_name_exists() -> None:
    targets = _make_targets()
    for doc in DOCS:
        for code in _code(doc.read_text(encoding="utf-8")):
            for target in re.findall(r"(?:^|[;&|(]\s*)make ([a-z][a-z-]*)", code.strip()):
                assert target in targets, f"{doc.relative_to(ROOT)} names `make {target}`, which the Makefile lacks"


def test_quickstart_commands_set_themselves_up() -> None:
    # The contract with a new user: on a fresh machine each quickstart command installs what it needs first.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = quickstart.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    assert [c[:1] for c in commands] == [["make"], ["make"]]
    assert "make test" in block, ".ci/run runs `make test`: the quickstart must name it"
    targets = _make_targets()
    for _, target in commands:
        assert "setup" in targets[target].split(), f"make {target} does not depend on setup"


def test_every_operator_command_the_docs_name_exists() -> None:
    # The installed console script names the CLI module, wherever the package keeps it.
    (script,) = entry_points(group="console_scripts", name="callsaver-infra")
    parser = importlib.import_module(script.module).build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for doc in DOCS:
        for named in re.findall(r"callsaver-infra ([a-z][a-z-]+)", doc.read_text(encoding="utf-8")):
            assert named in commands, f"{doc.relative_to(ROOT)} names `callsaver-infra {named}`, not a command"

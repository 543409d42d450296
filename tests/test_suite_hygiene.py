"""The test suite's own shape: test modules share helpers through tests/helpers.py and conftest.py fixtures, never by
importing each other, and no docstring paragraph is said twice (a shared fact is said once, in a module docstring
or in tests/helpers.py)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict

from tests.helpers import ROOT

TESTS = ROOT / "tests"
# A paragraph this long is prose worth saying once; shorter ones ("Offline.") may recur.
MIN_PARAGRAPH = 80


def imported_test_modules(source: str, package: str = "tests") -> list[str]:
    """The test modules (test_*.py, conftest) that source imports, absolutely or relatively."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            # `from tests import test_x` names the module in the imported names.
            modules = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [m for m in modules if re.fullmatch(r"(tests\.)?(test_\w+|conftest)", m)]
    return found


def docstring_paragraphs(source: str) -> list[str]:
    """Every paragraph of every docstring (module, class, function), whitespace-normalised, at least MIN_PARAGRAPH
    characters long."""
    paragraphs = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                paragraphs += [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc)]
    return [p for p in paragraphs if len(p) >= MIN_PARAGRAPH]


def repeated_paragraphs(sources: dict[str, str]) -> dict[str, list[str]]:
    """Paragraphs said more than once across sources (file name -> text), with where."""
    where: dict[str, list[str]] = defaultdict(list)
    for name, source in sources.items():
        for paragraph in docstring_paragraphs(source):
            where[paragraph].append(name)
    return {p: names for p, names in where.items() if len(names) > 1}


def _test_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(TESTS.glob("*.py"))}


def test_no_test_module_imports_another() -> None:
    offenders = {name: mods for name, source in _test_sources().items() if (mods := imported_test_modules(source))}
    assert offenders == {}, "move shared helpers to tests/helpers.py (or a conftest.py fixture)"


def test_no_docstring_paragraph_is_repeated() -> None:
    repeated = repeated_paragraphs(_test_sources())
    assert repeated == {}, "say it once: in the module docstring, or in tests/helpers.py's"


def test_the_checks_catch_what_they_look_for() -> None:
    """The two checks above on sources made to break them."""
    importing = "from tests.test_cdk_cli import _cdk\nimport tests.conftest\nfrom . import test_config\n"
    assert imported_test_modules(importing) == ["tests.test_cdk_cli", "tests.conftest", "tests.test_config"]
    assert imported_test_modules("from tests.helpers import ROOT\nimport pytest\n") == []
    disclaimer = "Runs against a local server on 127.0.0.1 that speaks the service's wire protocol (unreachable here)."
    one = f'def test_a():\n    """A proves one thing.\n\n    {disclaimer}\n    """\n'
    two = f'def test_b():\n    """B proves another.\n\n    {disclaimer}\n    """\n'
    assert repeated_paragraphs({"test_a.py": one, "test_b.py": two}) == {disclaimer: ["test_a.py", "test_b.py"]}
    assert repeated_paragraphs({"test_a.py": one, "test_b.py": two.replace(disclaimer, "")}) == {}

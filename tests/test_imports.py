"""What a deploy and an operator command load: never moto, the LiveKit stand-in or the rehearsal (dev tooling).

Each graph is loaded in a fresh Python process, so modules this test session already imported cannot hide or fake
an import; the static checks also see imports inside functions that no process here runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CLI_RUN

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "callsaver_infra"
# Development tooling and what only it needs: moto and its server (Flask, Werkzeug), the stand-in's web server.
DEV_ONLY = ("moto", "flask", "werkzeug", "aiohttp.web", "callsaver_infra.dev")

# Load a graph in a fresh process, then print every loaded module's name. app.py runs under another name than
# __main__, so its imports run and nothing is synthesized; every module of the named packages is imported too,
# which covers the imports the CLI's subcommands make only when they run.
LOADER = """
import importlib, json, pkgutil, runpy, sys
for package in sys.argv[2:]:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
if sys.argv[1] != "-":
    runpy.run_path(sys.argv[1], run_name="app_imports_only")
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(app_py: str, *packages: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADER, app_py, *packages], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.splitlines()[-1])
    return modules


def _matching(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_a_deploy_loads_no_operator_or_dev_module() -> None:
    modules = _loaded(str(ROOT / "app.py"), "callsaver_infra.app")
    assert "callsaver_infra.app.environment" in modules and "aws_cdk" in modules  # the graph was really loaded
    assert _matching(modules, (*DEV_ONLY, "callsaver_infra.ops")) == []


def test_operator_commands_load_no_dev_module() -> None:
    modules = _loaded("-", "callsaver_infra.ops")
    assert {"callsaver_infra.ops.cli", "callsaver_infra.ops.status", "callsaver_infra.ops.push_egress.verify"} <= set(
        modules
    )
    assert _matching(modules, DEV_ONLY) == []


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in `path` names, functions included (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize(
    ("sources", "forbidden"),
    [
        (["app.py", "callsaver_infra/app"], ("callsaver_infra.ops", "callsaver_infra.dev", "moto")),
        (["callsaver_infra/ops"], ("callsaver_infra.dev", "moto")),
    ],
    ids=["app", "ops"],
)
def test_no_import_statement_crosses_into_ops_or_dev(sources: list[str], forbidden: tuple[str, ...]) -> None:
    files = [f for s in sources for f in ((ROOT / s).rglob("*.py") if (ROOT / s).is_dir() else [ROOT / s])]
    crossing = [
        f"{f.relative_to(ROOT)}:{line}: {name}"
        for f in files
        for line, name in _imports(f)
        if any(name == p or name.startswith(p + ".") for p in forbidden)
    ]
    assert len(files) > 5 and crossing == []


# Every command's --help, a dry run that loads and validates the config, and an error's exit code (the CLI's
# `except` clauses name the hook's error classes); then one name that needs the LiveKit client, as a control.
WITHOUT_LIVEKIT = """
import json
from callsaver_infra.ops import push_egress

codes = [run(["--help"])] + [run([c, "--help"]) for c in ("push-egress", "status", "rotate-egress-key", "check-image")]
codes += [run(["secrets", "set", "--env", "local", "agent/OPENAI_API_KEY", "--dry-run"], "sk-fake-not-real-0123")]
codes += [run(["push-egress", "--env", "local", "--verify-seconds", "1"])]  # HookError before any read: exit 2
before = sorted(m for m in sys.modules if m.split(".")[0] in ("livekit", "aiohttp"))
push_egress.run_hook
after = sorted(m for m in sys.modules if m.split(".")[0] in ("livekit", "aiohttp"))
print(json.dumps({"codes": codes, "before": before, "after": after}))
"""


def test_commands_that_talk_to_no_livekit_load_neither_its_client_nor_aiohttp() -> None:
    """The push-egress package loads each name on first use: the CLI's help, config checks and exit codes take
    ~0.3 s less without livekit-api and aiohttp (python -X importtime -c 'import callsaver_infra.ops.cli')."""
    result = subprocess.run(
        [sys.executable, "-c", CLI_RUN + WITHOUT_LIVEKIT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe["codes"] == [0, 0, 0, 0, 0, 0, 2]
    assert probe["before"] == []
    assert {"livekit.api", "aiohttp"} <= set(probe["after"])  # the probe sees these modules once something loads them


def test_the_push_egress_package_exports_to_mypy_what_it_loads_at_run_time() -> None:
    """Its TYPE_CHECKING imports (what mypy checks callers against) and _HOME (what __getattr__ loads) name the
    same things from the same modules, and each name loads."""
    from callsaver_infra.ops import push_egress

    tree = ast.parse((PACKAGE / "ops" / "push_egress" / "__init__.py").read_text(encoding="utf-8"))
    typed = {
        (node.module.rsplit(".", 1)[-1], alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("callsaver_infra.")
        for alias in node.names
    }
    loaded = {(module, name) for module, names in push_egress._HOME.items() for name in names}
    assert len(typed) > 20 and typed == loaded
    assert all(getattr(push_egress, name) is not None for name in push_egress.__all__)

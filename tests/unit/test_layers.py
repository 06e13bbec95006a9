"""The layers hold: import-linter keeps every contract of setup.cfg, the layers contract bites, only the store
speaks SQL, and no function-level import dodges a layer."""

from __future__ import annotations

import ast
import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.contracts.layers import LayersContract

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mailserver", "directory", "crypto", "policies", "admin_cli")
STORE = ROOT / "mailserver" / "store"

#: function-level imports of the project's modules that are known and not yet removed:
#: (importing module, imported module) -> why it is still there
LAZY_ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield name, path


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""] if node.level == 0 else []


def _layers_contract() -> tuple[dict[str, object], dict[str, object]]:
    config = read_configuration(str(ROOT / "setup.cfg"))
    layers = [c for c in config["contracts_options"] if c["type"] == "layers"]
    assert len(layers) == 1, "setup.cfg has one layers contract"
    return config["session_options"], layers[0]


def test_lint_imports_keeps_every_contract() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is installed with the dev extra"
    done = subprocess.run(
        [exe, "--no-cache", "--config", str(ROOT / "setup.cfg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_layers_run_from_the_cli_down_to_the_store() -> None:
    _, options = _layers_contract()
    layers = [str(line) for line in options["layers"]]

    def rank(module: str) -> int:
        found = [i for i, line in enumerate(layers) if module in {m.strip(" ()") for m in line.split("|")}]
        assert found, f"{module} is in no layer"
        return found[0]

    order = [
        "admin_cli",
        "mailserver.app",
        "mailserver.imap",
        "directory",
        "mailserver.mailboxes",
        "mailserver.context",
        "mailserver.config",
        "policies",
        "mailserver.store",
    ]
    ranks = [rank(m) for m in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks), list(zip(order, ranks, strict=True))
    assert rank("mailserver.smtp") == rank("mailserver.imap")
    assert rank("crypto") == rank("policies")
    assert (
        rank("mailserver.config") < rank("mailserver.message") < rank("policies")
    )  # the model fills policies' Content


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("mailserver.store.db", "mailserver.imap.session"),  # the store reaching up to a front end
        ("directory.accounts", "mailserver.smtp.handlers"),  # a service reaching up to a front end
        ("mailserver.imap.session", "mailserver.smtp.intake"),  # one front end into another
        ("mailserver.smtp.queue", "mailserver.app"),  # the circle Endpoint/Service used to make
        ("policies.content", "mailserver.mailboxes"),  # policies reaching up to a service
    ],
)
def test_the_layers_contract_breaks_on_an_upward_import(graph: grimp.ImportGraph, importer: str, imported: str) -> None:
    session_options, options = _layers_contract()
    contract = LayersContract(name=str(options["name"]), session_options=session_options, contract_options=options)
    assert contract.check(graph, verbose=False).kept
    graph.add_import(importer=importer, imported=imported)
    try:
        assert not contract.check(graph, verbose=False).kept
    finally:
        graph.remove_import(importer=importer, imported=imported)


def test_only_the_store_imports_sqlalchemy() -> None:
    offenders = []
    for name, path in _modules():
        if path.is_relative_to(STORE):
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for module in _imported(node):
                    if module.split(".")[0] == "sqlalchemy":
                        offenders.append(f"{name}:{node.lineno} imports {module}")
    assert not offenders, "SQL belongs behind a repository of the unit of work:\n" + "\n".join(offenders)


def test_no_function_level_import_dodges_a_layer() -> None:
    """admin_cli is the top layer: its function-level imports only defer loading, nothing sits above it."""
    found: dict[tuple[str, str], int] = {}
    for name, path in _modules():
        if name.startswith("admin_cli"):
            continue
        for func in ast.walk(_tree(path)):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    for module in _imported(node):
                        if module.split(".")[0] in PACKAGES:
                            found[(name, module)] = node.lineno
    unexpected = {k: v for k, v in found.items() if k not in LAZY_ALLOWED}
    assert not unexpected, f"import at module level, or fix the layering: {unexpected}"
    stale = set(LAZY_ALLOWED) - set(found)
    assert not stale, f"gone: remove from LAZY_ALLOWED {stale}"
    allowed = {importer for importer, _ in LAZY_ALLOWED}
    for name, path in _modules():
        assert name in allowed or "import where used" not in path.read_text(), path

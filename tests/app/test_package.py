"""The deployable package: exactly what `.funcignore` ships, and it runs on `requirements.txt` alone.

The Functions deployment (`func azure functionapp publish`, `azd deploy`) uploads the project
folder minus what `.funcignore` (gitignore syntax) leaves out, then installs `requirements.txt`.
These tests build that package the same way, install `requirements.txt` into a fresh virtualenv
and let the Functions worker's own indexing (`function_app.app.get_functions()`) run there.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pathspec
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_TOP_LEVEL = {"host.json", "function_app.py", "requirements.txt", "orchestrators", "activities", "core"}
KIT_ONLY_MODULES = {"aiohttp", "typer", "rich", "arc_hotpatch", "jsonschema", "pytest", "pathspec"}
TRIGGER_KINDS = {"timerTrigger", "httpTrigger", "eventGridTrigger", "orchestrationTrigger", "activityTrigger"}


def packaged_files(root: Path = ROOT) -> list[Path]:
    """The files `.funcignore` keeps, relative to ``root`` (directories it ignores are not entered)."""
    spec = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())
    kept: list[Path] = []
    for folder, directories, files in os.walk(root):
        relative_folder = Path(folder).relative_to(root)
        directories[:] = sorted(
            d for d in directories
            if d != ".git" and not spec.match_file(f"{(relative_folder / d).as_posix()}/")
        )
        for name in sorted(files):
            relative = relative_folder / name
            if not spec.match_file(relative.as_posix()):
                kept.append(relative)
    return kept


def build_package(destination: Path) -> list[Path]:
    files = packaged_files()
    for relative in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    return files


def test_funcignore_ships_the_app_and_its_core_only() -> None:
    files = packaged_files()
    assert {f.parts[0] for f in files} == SHIPPED_TOP_LEVEL
    assert not [f for f in files if f.suffix == ".pyc" or "__pycache__" in f.parts]
    # The Run Command scripts and the baselines data travel with the code that reads them.
    assert Path("activities/scripts/readiness.ps1") in files
    assert Path("core/baselines.json") in files


def _imported_top_level_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_no_shipped_module_imports_the_kit_or_its_packages() -> None:
    offenders = {
        str(path): sorted(_imported_top_level_modules((ROOT / path).read_text()) & KIT_ONLY_MODULES)
        for path in packaged_files() if path.suffix == ".py"
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_kit_import_check_catches_a_kit_import() -> None:
    assert _imported_top_level_modules("import aiohttp\nfrom rich.table import Table\nfrom .x import y\n") == {
        "aiohttp", "rich"}


INDEX_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import function_app
kinds = {
    function.get_function_name(): sorted(b["type"] for b in function.get_bindings_dict()["bindings"])
    for function in function_app.app.get_functions()
}
print(json.dumps({"functions": kinds, "path": sys.path, "file": function_app.__file__}))
"""


def test_the_package_indexes_on_requirements_txt_alone(tmp_path: Path) -> None:
    package = tmp_path / "package"
    build_package(package)
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=package, env=clean_env, capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    script = tmp_path / "index_app.py"
    script.write_text(INDEX_SCRIPT)
    indexed = subprocess.run(  # -I: no PYTHONPATH, no user site, no current directory on the path
        [str(python), "-I", str(script), str(package)],
        cwd=package, env=clean_env, capture_output=True, text=True, timeout=120,
    )
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    result = json.loads(indexed.stdout.strip().splitlines()[-1])
    assert result["file"] == str(package / "function_app.py")
    assert not [p for p in result["path"] if p.startswith(str(ROOT))], "the package must not see the repository"
    kinds = {kind for bindings in result["functions"].values() for kind in bindings}
    assert kinds >= TRIGGER_KINDS, kinds
    assert "durableClient" in kinds
    # Every orchestrator and activity the orchestrations call is in the package.
    from core import contracts

    names = set(result["functions"])
    assert set(contracts.ORCHESTRATOR_NAMES) <= names
    assert set(contracts.ACTIVITY_NAMES) <= names


@pytest.mark.parametrize("kit_module", sorted(KIT_ONLY_MODULES - {"arc_hotpatch"}))
def test_requirements_txt_does_not_pin_kit_packages(kit_module: str) -> None:
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert kit_module not in pinned

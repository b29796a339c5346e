"""The package seams: imports run one way (``bench`` -> ``methods``, ``datasets`` -> ``core``), and what gets
installed claims only the ``tvr_convbench`` namespace, so it lives beside Hugging Face ``datasets``."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"core": "core", "methods": "methods", "datasets": "datasets", "bench": "bench", "tvr_convbench": ""}
"""repository folder -> its package under ``tvr_convbench`` ("" = the namespace root)"""
ALLOWED = {
    "core": set(),
    "methods": {"core"},
    "datasets": {"core"},
    "bench": {"core", "methods", "datasets"},
    "tvr_convbench": {"bench"},
}
"""package -> the packages it may import (besides itself)"""
OWN_TOP_LEVEL = ("bench", "methods", "datasets", "core")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                out.append((node.lineno, f"<relative level {node.level}>"))
            else:
                out.append((node.lineno, node.module or ""))
    return out


def package_of(module: str) -> str | None:
    """Which of our packages a module name belongs to (None for third-party modules)."""
    parts = module.split(".")
    if parts[0] != "tvr_convbench":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else "tvr_convbench"


def source_files(folder: str) -> list[Path]:
    root = REPO / folder
    return sorted(root.rglob("*.py")) if folder != "tvr_convbench" else sorted(root.glob("*.py"))


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_imports_run_one_way(folder: str) -> None:
    """No arrow points back: core imports none of ours, methods and datasets only core, bench no entry point."""
    wrong = []
    for path in source_files(folder):
        for line, module in imported_modules(path):
            target = package_of(module)
            where = f"{path.relative_to(REPO)}:{line} imports {module}"
            if module.startswith("<relative") or module.split(".")[0] in OWN_TOP_LEVEL:
                wrong.append(f"{where} (import through the tvr_convbench namespace)")
            elif target is not None and target != folder and target not in ALLOWED[folder]:
                wrong.append(f"{where} ({folder} may import only {sorted(ALLOWED[folder]) or 'nothing of ours'})")
    assert not wrong, "\n".join(wrong)


def test_the_walk_sees_a_wrong_arrow(tmp_path: Path) -> None:
    """The checker itself: an import of bench from core is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from tvr_convbench.bench.config import TrainerConfig\nimport datasets\n")
    assert [package_of(m) for _, m in imported_modules(bad)] == ["bench", None]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=out)
    return next(out.glob("tvr_convbench-*.whl"))


def test_wheel_claims_only_its_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"tvr_convbench"}
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    entries = zipfile.ZipFile(wheel).read(record).decode().splitlines()
    assert all(e.startswith(("tvr_convbench/", "tvr_convbench-")) for e in entries)  # uninstall removes only ours


def test_wheel_holds_every_module_and_shipped_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in FOLDERS.items():
        for path in source_files(folder):
            inner = path.relative_to(REPO / folder).as_posix()
            assert "/".join(p for p in ("tvr_convbench", package, inner) if p) in names, path
    for sweep in (REPO / "bench" / "configs" / "sweeps").glob("*.yaml"):
        assert f"tvr_convbench/bench/configs/sweeps/{sweep.name}" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "tvr-convbench = tvr_convbench.bench.cli:main" in entry_points


def test_installed_beside_hugging_face_datasets(wheel: Path, tmp_path: Path) -> None:
    """A target that already holds a ``datasets`` package keeps it intact and importable beside ours."""
    target = tmp_path / "site"
    (target / "datasets").mkdir(parents=True)
    (target / "datasets" / "__init__.py").write_text("OWNER = 'huggingface'\n")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert (target / "datasets" / "__init__.py").read_text() == "OWNER = 'huggingface'\n"
    code = (
        "import datasets, tvr_convbench.datasets as ours; "
        "assert datasets.OWNER == 'huggingface'; assert ours.dataset_class('proxy').__name__ == 'ProxyDataModule'; "
        f"assert ours.__file__.startswith({str(target)!r})"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

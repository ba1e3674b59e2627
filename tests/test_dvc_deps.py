"""dvc.yaml's dependencies cannot drift: every `lmcore` module a stage imports is a dependency of that stage, and
every `lmcore` dependency is imported, so editing a module reruns exactly the stages that use it.

Imports are read statically (module-level and function-level `import`/`from ... import`), transitively, from each
stage's script; the objective of each architecture named in the stage's command (`--architecture X` or a path under
`checkpoints/X`) is a root too, since the registry imports objective modules by name. Every DVC project in the
repository is checked: the top-level one and the subrepos of pipelines/ (whose stages name code as ../../lmcore/...).
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from lmcore.objectives import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """lmcore.a.b → lmcore/a/b.py or lmcore/a/b/__init__.py (None outside the package)."""
    if not (name == "lmcore" or name.startswith("lmcore.")):
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Names of the lmcore modules a file imports anywhere in it (package __init__ files of each included)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]:
        block.body = []  # annotations only: nothing is imported at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import submodule`
    out = set()
    for name in names:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]))}
    return out


def closure(roots: set[Path]) -> set[Path]:
    """Every lmcore file reachable from `roots` through imports (the roots included)."""
    seen, todo = set(), list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(m) for m in imported_modules(path))
    return {p for p in seen if p.is_relative_to(ROOT / "lmcore")}


def dvc_projects() -> list[Path]:
    """The repository root and every DVC subrepo in it (a folder with its own .dvc/config, e.g. pipelines/scaling):
    a DVC project does not see its subrepos' stages, so each is opened on its own."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", ":(glob)**/.dvc/config"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [ROOT] + sorted({(ROOT / f).parents[1] for f in listed} - {ROOT})


def stages() -> list[tuple[str, str, Path, list[Path]]]:
    """(name, cmd, working directory, dependency paths) of every stage of every pipeline of every DVC project, with
    foreach/matrix expanded by DVC; a stage outside the top-level dvc.yaml is named `<its dvc.yaml>:<stage>`."""
    from dvc.repo import Repo

    out = []
    for project in dvc_projects():
        for stage in Repo(str(project), uninitialized=True).index.stages:
            cmd = stage.cmd if isinstance(stage.cmd, str) else " ".join(stage.cmd)
            dvcfile = Path(stage.path).relative_to(ROOT)
            name = stage.name if dvcfile == Path("dvc.yaml") else f"{dvcfile}:{stage.name}"
            out.append((name, cmd, Path(stage.wdir), [Path(d.fs_path).resolve() for d in stage.deps]))
    return out


def roots_of(cmd: str, wdir: Path) -> set[Path]:
    """The stage script (a path in stages/, relative to the stage's working directory) and the objectives of the
    architectures the command names."""
    words = shlex.split(cmd)
    paths = {(wdir / w).resolve() for w in words if w.endswith(".py")}
    scripts = {p for p in paths if p.is_relative_to(ROOT / "stages")}
    archs = {words[i + 1] for i, w in enumerate(words[:-1]) if w == "--architecture"}
    # A checkpoint it loads (a .pt file) is rebuilt into its architecture's objective.
    archs |= {m for w in words for m in re.findall(r"checkpoints/([a-z]+)(?:_instruct)?/\S*\.pt", w) if m in REGISTRY}
    return scripts | {module_file(f"lmcore.objectives.{a}") for a in archs}


STAGES = stages()


def test_every_pipeline_is_checked():
    """A dvc.yaml that no DVC project reads (e.g. a subrepo left out of dvc_projects) would escape the test below."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", ":(glob)**/dvc.yaml"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    seen = {name.rpartition(":")[0] or "dvc.yaml" for name, _, _, _ in STAGES}
    assert seen == set(listed) and {"pipelines/scaling/dvc.yaml", "pipelines/data_constrained/dvc.yaml"} <= seen


@pytest.mark.parametrize("name, cmd, wdir, deps", STAGES, ids=[name for name, _, _, _ in STAGES])
def test_stage_depends_on_exactly_the_modules_it_imports(name, cmd, wdir, deps):
    roots = roots_of(cmd, wdir)
    used = closure(roots)
    assert used, f"{name}: no stage script found in its cmd"
    covered = lambda f: any(f == d or f.is_relative_to(d) for d in deps)
    missing = sorted(str(f.relative_to(ROOT)) for f in used if not covered(f))
    assert not missing, f"{name}: imports lmcore modules missing from its deps: {missing}"
    code = [d for d in deps if d.is_relative_to(ROOT / "lmcore") or d.is_relative_to(ROOT / "stages")]
    unused = sorted(
        str(d.relative_to(ROOT)) for d in code if not any(f == d or f.is_relative_to(d) for f in used | roots)
    )
    assert not unused, f"{name}: depends on code it never imports: {unused}"

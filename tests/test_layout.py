"""The package's shape: layers without import cycles, no UI or test code in the backend, no pickle,
and an installed (non-editable) package that finds its demo and runs outside the source tree."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "boomerang"
#: Third-party modules a function may import late: each takes seconds to import and only some
#: operations need it.
LATE_IMPORTS_ALLOWED = {"datasets", "lm_eval"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        if "tasks" in f.relative_to(PKG).parts[:-1] or f.name == "__main__.py":
            continue  # lm-eval task helpers are loaded by lm-eval, not imported
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _imports(name: str, path: Path) -> tuple[set[str], list[str]]:
    """(boomerang modules imported at module level, imports made inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    mods = _modules()
    top: set[str] = set()
    late: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    late += [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    late.append("." * sub.level + (sub.module or ""))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "boomerang":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                top.add(sub if sub in mods else target)
        elif isinstance(node, ast.Import):
            top |= {a.name for a in node.names if a.name.split(".")[0] == "boomerang"}
    return top & set(mods), late


def test_no_import_cycle_and_no_late_imports_of_our_own_modules():
    mods = _modules()
    graph, late = {}, {}
    for name, path in mods.items():
        graph[name], late[name] = _imports(name, path)
    bad_late = {n: [i for i in imps if i.startswith(".") or i.split(".")[0] not in LATE_IMPORTS_ALLOWED]
                for n, imps in late.items()}
    assert {n: i for n, i in bad_late.items() if i} == {}
    # Depth-first search for a cycle among module-level imports.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(u: str, stack: list[str]) -> bool:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u] - {u}):
            if state.get(v) == 1:
                cycle.extend(stack[stack.index(v):] + [v])
                return True
            if v not in state and visit(v, stack):
                return True
        stack.pop()
        state[u] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, []):
            break
    assert cycle == []
    assert len(mods) > 30


def test_core_depends_on_nothing_above_it():
    for name, path in _modules().items():
        if name.startswith("boomerang.core"):
            top, _ = _imports(name, path)
            above = [m for m in top if not m.startswith(("boomerang.core", "boomerang.errors", "boomerang.io",
                                                         "boomerang.progress"))]
            assert above == [], (name, above)


#: The backend's rooms from the bottom floor up, as the README's Layout section lists them: a
#: module may import from its own room and the rooms before it, never from one after it.
FLOORS = ("errors", "paths", "io", "progress", "threads", "cache", "settings", "plots", "core", "data", "zoo",
          "orders", "eval", "train", "reference", "recipes", "ui", "cli")


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_every_module_imports_only_from_its_floor_and_below():
    mods = _modules()
    rooms = {_room(m) for m in mods} - {""}
    assert rooms == set(FLOORS), f"a room the README's Layout does not place: {sorted(rooms ^ set(FLOORS))}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    listed = [r for r in FLOORS if f"\n  {r}" in layout]
    assert sorted(listed, key=lambda r: layout.index(f"\n  {r}")) == list(FLOORS)  # the README's order
    up = []
    for name, path in mods.items():
        room = _room(name)
        if not room:
            continue  # the package's __init__ gathers the public API from every floor
        top, _ = _imports(name, path)
        for target in top:
            other = _room(target)
            if other and FLOORS.index(other) > FLOORS.index(room):
                up.append(f"{name} -> {target}")
    assert up == []


def test_backend_has_no_ui_test_or_pickle_code():
    for path in PKG.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not names & {"streamlit", "pickle", "pytest", "dill", "cloudpickle"}, path
        for banned in ("read_pickle", "to_pickle", "torch.load(", "assemble_by_hand", "saved_tiny_pair"):
            assert banned not in text, (path, banned)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_installed_wheel_ships_the_demo_and_runs_outside_the_source_tree(tmp_path):
    """`pip install .` (non-editable): the wheel carries the demo and the task files, and
    `python -m boomerang info` on the demo works from another folder."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("boomerang-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("boomerang/assets/demo/teacher/model.safetensors",
                   "boomerang/assets/demo/students/no-align/student_config.json",
                   "boomerang/assets/demo/same_size/8-layers/delta.safetensors",
                   "boomerang/assets/demo/same_size/11-layers/delta.json",
                   "boomerang/eval/tasks/bbc_news.yaml", "boomerang/eval/tasks/utils.py",
                   "boomerang/eval/tasks/data/demo_cloze.jsonl", "boomerang/orders/registry.py"):
        assert needed in names
    assert not any(n.startswith(("tests/", "bench/", "app_pages/")) for n in names)
    _declares_what_it_imports(wheel)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "BOOMERANG_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "boomerang", "info", "--pair", "demo"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "teacher: 12 layers" in run.stdout and "student: 7 layers" in run.stdout
    probe = subprocess.run([sys.executable, "-c", "import boomerang, sys; print(boomerang.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip().startswith(str(site))  # the installed copy ran, not the source tree
    assert not (work / "runs").exists() and not (site / "runs").exists()


def test_importing_boomerang_bounds_hub_waits():
    """A hub that never answers cannot hang a command: boomerang sets bounded time-outs before
    huggingface_hub reads them, unless the user chose their own."""
    code = "import boomerang, huggingface_hub.constants as c; print(c.HF_HUB_ETAG_TIMEOUT, c.HF_HUB_DOWNLOAD_TIMEOUT)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_") or k == "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["10", "30"], out.stderr
    env["HF_HUB_ETAG_TIMEOUT"] = "3"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["3", "30"], out.stderr


#: Modules boomerang imports only for an optional part, and the extra that declares each.
OPTIONAL_IMPORTS = {"streamlit": "app", "gguf": "smollm2", "kaleido": "png", "tensorboard": "tensorboard"}


def _declares_what_it_imports(wheel: Path) -> None:
    """Every third-party package the backend imports is a dependency of the wheel (or of the extra
    its optional part names), so `pip install` of it brings what `import boomerang` needs."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip() for line in z.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    declared: dict[str, str] = {}  # normalised distribution name -> "" or the extra it belongs to
    for r in requires:
        name = re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower().replace("_", "-")
        extra = re.search(r"extra == ['\"]([\w-]+)['\"]", r)
        declared[name] = extra.group(1) if extra else ""
    modules = set()
    for path in (ROOT / "boomerang").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    dists = packages_distributions()
    missing = []
    for m in sorted(modules - set(sys.stdlib_module_names) - {"boomerang"}):
        for dist in dists.get(m, [m]):
            want = OPTIONAL_IMPORTS.get(m, "")
            if declared.get(dist.lower().replace("_", "-")) != want:
                missing.append(f"{m} ({dist}{', extra ' + want if want else ''})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    for core in ("torch", "transformers", "accelerate", "safetensors", "pandas", "plotly"):
        assert declared.get(core) == "", core


def test_why_the_pages_are_not_in_a_folder_named_pages(tmp_path):
    """With a folder named pages/ beside app.py, Streamlit 1.67's AppTest takes the app for an old
    multipage app: after the first run it reruns the page file alone, so app.py (which builds
    the sidebar every page reads) no longer runs and the sidebar's widgets vanish. A real server
    is not affected (Chromium showed the sidebar and the listed pages only), but every AppTest of
    this suite relies on app.py running, so the pages live in app_pages/. The same app with its
    folder named otherwise keeps its sidebar. When this test fails, AppTest has been fixed and the
    folder can be renamed."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    def sidebar_after_a_rerun(folder: str) -> tuple[list[str], list[str]]:
        root = tmp_path / folder
        (root / folder).mkdir(parents=True)
        (root / "app.py").write_text(
            "import streamlit as st\n"
            f"page = st.navigation([st.Page('{folder}/a.py', title='A', url_path='a', default=True)])\n"
            "st.sidebar.checkbox('from app.py', key='box')\n"
            "page.run()\n")
        (root / folder / "a.py").write_text("import streamlit as st\nst.title('page A')\n")
        at = AppTest.from_file(str(root / "app.py"), default_timeout=60)
        at.run()
        at.checkbox(key="box").check().run()
        return [c.label for c in at.checkbox], [t.value for t in at.title]

    assert sidebar_after_a_rerun("app_pages") == (["from app.py"], ["page A"])
    assert sidebar_after_a_rerun("pages") == ([], ["page A"])  # app.py skipped: no sidebar


def test_closed_choices_are_literal_types_that_the_cli_offers():
    """A closed choice is written once, as a Literal: the type checker, the config's validation
    and the CLI's --help all read it from there."""
    import dataclasses
    import typing

    from boomerang.orders.pruning import PRUNING_METHODS, pruning_order
    from boomerang.train import DistillConfig
    from boomerang.train.events import DistillProgress
    from boomerang.ui import PairSpec, TrainingJob

    hints = typing.get_type_hints(DistillConfig)
    fields = {f.name: f for f in dataclasses.fields(DistillConfig)}
    for name in ("mode", "precision", "local_loss"):
        assert typing.get_origin(hints[name]) is typing.Literal
        assert tuple(fields[name].metadata["choices"]) == typing.get_args(hints[name]), name
    help_text = subprocess.run([sys.executable, "-m", "boomerang", "distill", "--help"], capture_output=True,
                               text=True, check=True, cwd=ROOT).stdout
    assert "{" + ",".join(typing.get_args(hints["mode"])) + "}" in help_text
    assert typing.get_args(typing.get_type_hints(pruning_order)["method"]) == PRUNING_METHODS
    for cls, name in ((DistillProgress, "event"), (PairSpec, "kind"), (TrainingJob, "kind"), (TrainingJob, "state")):
        assert typing.get_origin(typing.get_type_hints(cls)[name]) is typing.Literal, (cls, name)

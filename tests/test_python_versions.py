"""The package's source against the other Python versions it claims (``requires-python``).

The suite runs on one Python (3.11: the only one with a CPU torch wheel on this machine; for
3.10 and 3.12 the indexes offer only the CUDA build, gigabytes of downloads), so this is a cheap
stand-in that needs no install: every other interpreter found from the floor up compiles each
module of cnnwidgets (warnings as errors, so an escape sequence that 3.12 warns about fails too)
and resolves every standard-library name the package imports or reads off a standard module
(``from typing import Self`` or ``math.cbrt`` would fail on 3.10). It does not run the code.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cnnwidgets"

#: Run by each interpreter with the package folder and a JSON list of the test interpreter's
#: standard modules as arguments (a module new in 3.11, like tomllib, is in that list but not in
#: 3.10's own); prints a JSON list of problems.
CHECK = r"""
import ast, importlib, json, pathlib, sys, warnings

problems = []
STANDARD = set(sys.stdlib_module_names) | set(json.loads(sys.argv[2]))
def stdlib(name):
    return name.split(".")[0] in STANDARD

def resolve(module, attr, where):
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        problems.append(f"{where}: import {module}: {e}")
        return
    if attr is not None and not hasattr(mod, attr):
        try:
            importlib.import_module(f"{module}.{attr}")
        except ImportError:
            problems.append(f"{where}: {module}.{attr} does not exist")

def guarded(tree):
    # imports inside `try: ... except ImportError` are optional by design
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out

for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    src = path.read_text(encoding="utf-8")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(src, str(path), "exec", dont_inherit=True)
    except (SyntaxError, SyntaxWarning) as e:
        problems.append(f"{path}: {type(e).__name__}: {e}")
        continue
    tree = ast.parse(src)
    skip = guarded(tree)
    modules = {}  # local name -> standard module bound by `import x` / `import x as y`
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if stdlib(a.name):
                    resolve(a.name, None, where)
                    if a.asname or "." not in a.name:
                        modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__" \
                and stdlib(node.module):
            for a in node.names:
                resolve(node.module, None if a.name == "*" else a.name, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            resolve(modules[node.value.id], node.attr, f"{path}:{node.lineno}")
print(json.dumps(sorted(set(problems))))
"""


def _floor() -> tuple[int, int]:
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    m = re.fullmatch(r">=\s*3\.(\d+)", spec.strip())
    assert m, f"requires-python {spec!r}: this test reads only the form '>=3.N'"
    return 3, int(m.group(1))


def _interpreters() -> dict[str, str]:
    """One interpreter per Python 3 minor version from the floor up, other than the running one:
    pyenv's installed versions, else ``python3.N`` on PATH."""
    floor = _floor()
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = {}
    for minor in range(floor[1], 20):
        version = f"3.{minor}"
        if (3, minor) == sys.version_info[:2]:
            continue
        candidates = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")))
        exe = candidates[-1] if candidates else shutil.which(f"python{version}")
        if exe:
            found[version] = exe
    return found


INTERPRETERS = _interpreters()


def test_the_floor_interpreter_is_there():
    """The floor of requires-python (3.10) is the version worth checking most; under CI=true its
    absence fails rather than passing unnoticed."""
    floor = "3.%d" % _floor()[1]
    if floor not in INTERPRETERS:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no Python {floor} interpreter found, and CI=true forbids skipping")
        pytest.skip(f"no Python {floor} interpreter found")


@pytest.mark.parametrize("version", sorted(INTERPRETERS, key=lambda v: int(v.split(".")[1])))
def test_source_compiles_and_stdlib_names_exist(version):
    exe = INTERPRETERS[version]
    standard = json.dumps(sorted(sys.stdlib_module_names))
    out = subprocess.run([exe, "-I", "-c", CHECK, str(PACKAGE), standard], capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    reported = subprocess.run([exe, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
    assert reported == version, (exe, reported)
    problems = json.loads(out.stdout)
    assert problems == [], "\n".join(problems)

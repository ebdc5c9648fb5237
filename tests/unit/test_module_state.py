"""No module-level mutable state in the controller, the apps, ebpf/ or vnf/.

State that outlives a call belongs to an object with a clear lifetime (the Core, an app, a
checker), passed explicitly: a module-level cache makes results depend on what ran before in the
process (a schema registered at import, a rule parsed by another instance, options set by the
launcher). This scans the source (ast) for what creates such state:

- a function that rebinds a module global (`global X`);
- a function that mutates a module-level name: item or attribute assignment, `del X[k]`, or a
  mutating method (`X.append(...)`, `X.update(...)`, `X.clear()`...);
- a function that assigns an attribute of an imported module (`shim.RUNTIME.config = ...`) or of
  a class (`CoreApp.instance = self`);
- a memo decorator (`functools.cache`, `lru_cache`), except the pure wire encoders below.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("controller", "apps", "ebpf", "vnf")
MUTATORS = {
    "append",
    "extend",
    "insert",
    "remove",
    "pop",
    "popitem",
    "clear",
    "update",
    "setdefault",
    "add",
    "discard",
}
# Memoised pure functions of hashable values whose results are immutable (bytes, bools,
# normalised scalars): the cache changes no answer, only its speed.
PURE_MEMOS = {
    ("controller/flows/model.py", "norm_scalar"),
    ("controller/flows/model.py", "_is_full_mask"),
    ("controller/flows/model.py", "_norm_masked"),
    ("controller/flows/encode.py", "_oxm_number"),
    ("controller/flows/encode.py", "_oxm_generic"),
    ("controller/flows/encode.py", "_instruction_bytes"),
}


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def findings(path: str, source: str) -> list[str]:
    """What in `source` (the file at `path`, relative to the repo) keeps state in a module."""
    tree = ast.parse(source)
    module_names: set[str] = set()
    classes: set[str] = set()
    imported_modules: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            module_names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ClassDef):
            classes.add(node.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported_modules.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from controller import shim`: shim is a module; names from modules are not
            imported_modules.update(
                a.asname or a.name for a in node.names if node.module in PACKAGES
            )
    out = []
    functions = [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    for fn in functions:
        for deco in fn.decorator_list:
            name = ast.unparse(deco.func if isinstance(deco, ast.Call) else deco)
            if name.split(".")[-1] in ("cache", "lru_cache") and (path, fn.name) not in PURE_MEMOS:
                out.append(f"{path}:{fn.lineno}: {fn.name} is memoised in the module ({name})")
        local = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        for node in ast.walk(fn):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = (
                    node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                )
                for t in targets:
                    if isinstance(t, ast.Name):
                        local.add(t.id)
        for node in ast.walk(fn):
            where = f"{path}:{getattr(node, 'lineno', fn.lineno)}"
            if isinstance(node, ast.Global):
                out.append(f"{where}: {fn.name} rebinds module globals {node.names}")
            targets: list[ast.expr] = []
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS
            ):
                targets = [node.func.value]
                if _root_name(node.func.value) in module_names - local and isinstance(
                    node.func.value, ast.Name
                ):
                    out.append(f"{where}: {fn.name} mutates module-level {node.func.value.id}")
                continue
            for t in targets:
                if not isinstance(t, (ast.Attribute, ast.Subscript)):
                    continue
                root = _root_name(t)
                if root in local or root in ("self", "cls"):
                    continue
                if root in module_names:
                    out.append(f"{where}: {fn.name} mutates module-level {root}")
                elif root in imported_modules:
                    out.append(f"{where}: {fn.name} sets {ast.unparse(t)} in another module")
                elif root in classes:
                    out.append(f"{where}: {fn.name} sets class attribute {ast.unparse(t)}")
    return out


def sources() -> list[tuple[str, str]]:
    out = []
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as fh:
                        out.append((os.path.relpath(path, ROOT), fh.read()))
    return out


def test_no_module_keeps_state():
    found = [f for path, text in sources() for f in findings(path, text)]
    assert not found, "module-level state:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source, what",
    [
        (
            "SCHEMAS = {}\ndef register_schema(s, x):\n    SCHEMAS[s] = x\n",
            "mutates module-level SCHEMAS",
        ),
        (
            "_PARSED = {}\ndef parse(t):\n    _PARSED.clear()\n",
            "mutates module-level _PARSED",
        ),
        (
            "from controller import shim\ndef run(c):\n    shim.RUNTIME.config = c\n",
            "another module",
        ),
        (
            "class CoreApp:\n    def __init__(self):\n        CoreApp.instance = self\n",
            "class attr",
        ),
        ("import functools\n@functools.lru_cache\ndef f(x):\n    return x\n", "memoised"),
        ("N = 0\ndef bump():\n    global N\n    N += 1\n", "rebinds module globals"),
    ],
)
def test_the_scan_finds_what_the_old_code_did(source, what):
    """Each pattern the modules used to keep state by (config.SCHEMAS, _PARSED, shim.RUNTIME,
    CoreApp.instance, a memo) is found."""
    [finding] = findings("probe.py", source)
    assert what.split()[0] in finding


def test_the_scan_leaves_locals_and_self_alone():
    source = (
        "X = {}\ndef f(self, out):\n    d = {}\n    d[1] = 2\n    out.append(1)\n    self.x = 1\n"
    )
    assert findings("probe.py", source) == []

"""The package's shape: imports form a DAG (models <- weights <- data <- train / tasks <- cli)
and each shared concept has exactly one implementation."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "resnets"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (never executed)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, module_level_only: bool = False) -> set[str]:
    """Modules of the package that ``name`` imports, inside functions too (not counting
    ``TYPE_CHECKING`` blocks)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = tree.body if module_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != name}


def import_graph() -> dict[str, set[str]]:
    """Edges module -> module; importing a package counts as importing what its
    ``__init__`` imports at module level (that runs on import)."""
    graph = {name: imports_of(name) for name in MODULES}
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            graph[name] = imports_of(name, module_level_only=True)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_cycle_through_a_package_init():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_is_a_dag():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


# lower layers never import higher ones
LAYERS = [("resnets.models", 0), ("resnets.weights", 1), ("resnets.data", 2),
          ("resnets.export", 3), ("resnets.train", 4), ("resnets.tasks", 4),
          ("resnets.experiments", 5), ("resnets.serve", 5), ("resnets.cli", 6)]


def layer(name: str) -> int | None:
    if name.endswith(".__main__"):  # entry points (python -m ...) are command lines
        return None
    for prefix, level in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            return level
    return None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_import_only_their_layer_or_below(name):
    mine = layer(name)
    if mine is None:
        return
    above = sorted(m for m in imports_of(name) if (layer(m) or 0) > mine)
    assert not above, f"{name} imports higher layers: {above}"


def _src_texts() -> dict[str, str]:
    return {name: path.read_text() for name, path in MODULES.items()}


def test_one_definition_of_the_imagenet_statistics():
    where = [n for n, text in _src_texts().items() if "0.485" in text or "0.229" in text]
    assert where == ["resnets.weights.preprocessing"]


def test_one_preprocessing_class():
    classes = [(n, c) for n, text in _src_texts().items()
               for c in re.findall(r"^class (\w*Preprocess\w*)\b", text, re.M)]
    assert classes == [("resnets.weights.preprocessing", "Preprocessing")]


def test_state_dicts_enter_models_through_one_function():
    """Every ``load_state_dict`` call on a model sits in weights/loading.py; elsewhere only
    optimizers, schedulers, gradient scalers and weight averages restore their state."""
    allowed = re.compile(r"(optimizer|scheduler|scaler|ema)\w*\.load_state_dict\(")
    offenders = []
    for name, text in _src_texts().items():
        if name == "resnets.weights.loading":
            continue
        for line in text.splitlines():
            if ".load_state_dict(" in line and not allowed.search(line):
                offenders.append(f"{name}: {line.strip()}")
    assert offenders == []


def test_one_run_folder_module_shared_by_both_trainers():
    texts = _src_texts()
    assert "resnets.train.run_folder" in imports_of("resnets.train.loop")
    assert "resnets.train.run_folder" in imports_of("resnets.train.sr")
    writers = [n for n, t in texts.items() if '"config.json"' in t]
    assert writers == ["resnets.train.run_folder"]


def test_one_module_writes_files_atomically():
    texts = _src_texts()
    assert [n for n, t in texts.items() if "os.replace(" in t] == ["resnets.files"]
    assert [n for n, t in texts.items() if "tempfile.mkstemp(" in t] == ["resnets.files"]


def _messages(name: str) -> list[str]:
    """The string constants of a module that are not docstrings (messages, defaults)."""
    tree = ast.parse(MODULES[name].read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"resnets.cli"}))
def test_library_names_no_cli_flags_and_no_checkout_paths(name):
    """Errors and defaults of the library say what was wrong with a value; the CLI maps
    them to flags. No library default points into a development checkout."""
    texts = _messages(name)
    assert not [t for t in texts if "shared/data" in t], name
    flags = [t for t in texts if re.search(r"(^|[\s(])--[a-z]", t)]
    assert not flags, f"{name} names CLI flags: {flags[:3]}"

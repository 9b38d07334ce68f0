"""The house: no import cycles between genie2's modules, a model package that imports no server,
image or prompting code, and files and functions short enough to read."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "genie2"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
# files allowed a little over, and why
LONGER_FILES = {
    "model/genie2.py": 420,  # the nanoGPT-style model file: leaf pieces moved out, what is left is the model
    "cli.py": 445,  # one short argument builder per verb; every --help string spelled out
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """genie2 modules a file imports when it is imported (not those imported inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genie2"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("genie2")}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # importing a.b.c runs a/b/__init__ too, unless the importer lives in a.b (already running)
        targets, own_packages = set(), {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        for target in top_level_imports(path):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} - own_packages
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_the_model_package_imports_no_server_image_or_prompting_code():
    code = (
        "import sys, genie2.model, genie2.tokenizer\n"
        "heavy = ('fastapi', 'uvicorn', 'starlette', 'PIL', 'imageio', 'matplotlib', 'accelerate')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('genie2.play')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_files_and_functions_are_short(path):
    text, limit = path.read_text(), LONGER_FILES.get(str(path.relative_to(SRC)), MAX_FILE_LINES)
    assert len(text.splitlines()) <= limit, f"{path.name} has {len(text.splitlines())} lines"
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in {path.name}: {long}"


def readme_layout() -> set[str]:
    """The files the README's "How the model works" tree names, as paths under src/genie2/."""
    readme = (SRC.parents[1] / "README.md").read_text()
    block = readme.split("## How the model works", 1)[1].split("```", 2)[1]
    named, folders = set(), []
    for line in block.splitlines()[1:]:  # the first line is src/genie2/ itself
        if not line.strip():
            continue
        depth, name = (len(line) - len(line.lstrip())) // 2 - 1, line.split()[0]
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            named.add("/".join([*folders, name]))
    return named


def test_the_readme_layout_names_every_file_in_the_tree():
    tree = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent == SRC}
    assert readme_layout() == tree

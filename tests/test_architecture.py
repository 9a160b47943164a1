"""The import rules of docs/ARCHITECTURE.md, checked on the source: no cycle, no forbidden arrow.

Every import statement under atlas/ counts (module level, inside functions, under TYPE_CHECKING):
a cycle hidden in a function is still a cycle between two parts of the design.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "atlas"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
ANY_PART = "any other part of atlas"

# An arrow: (importing part, imported part) -> "file:line imports module" for each occurrence.
Graph = dict[tuple[str, str], list[str]]


def part_of(module: str) -> str:
    """atlas.eval.offline -> eval; atlas.runtime -> runtime."""
    return module.split(".")[1]


def imported_modules(node: ast.AST, module: str) -> list[str]:
    """The atlas modules one import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")[: -node.level]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    # `from atlas import logs` names the module atlas.logs.
    if target == "atlas":
        return [f"atlas.{a.name}" for a in node.names]
    return [target]


def exceptions() -> set[tuple[str, str]]:
    """(file, imported module) pairs of the `| file | imports |` table of the doc."""
    text = ARCHITECTURE.read_text()
    if "| file | imports |" not in text:
        return set()  # no exception documented
    table = text[text.index("| file | imports |") :].split("\n\n")[0]
    return set(re.findall(r"\| `([\w/.]+)` \| `([\w.]+)` \|", table))


def import_graph() -> Graph:
    allowed = exceptions()
    graph: Graph = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        if module == "atlas":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(rel))):
            for target in imported_modules(node, module):
                if (str(rel), target) in allowed:
                    continue  # a documented exception
                if target.startswith("atlas.") and part_of(target) != part_of(module):
                    where = f"{rel}:{getattr(node, 'lineno', 0)} imports {target}"
                    graph[(part_of(module), part_of(target))].append(where)
    return graph


def forbidden_arrows() -> dict[str, set[str]]:
    """{part: parts it never imports} from the `| part | never imports |` table of the doc."""
    text = ARCHITECTURE.read_text()
    table = text[text.index("| part | never imports |") :].split("\n\n")[0]
    rules: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        part, never = re.fullmatch(r"\| `(\w+)` \| (.+) \|", line.strip()).groups()
        rules[part] = {ANY_PART} if never == ANY_PART else set(re.findall(r"`(\w+)`", never))
    return rules


def cycles(graph: Graph) -> list[list[str]]:
    """Every elementary cycle's parts, found by a DFS from each part (the graph is small)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for a, b in graph:
        edges[a].add(b)
    found: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in edges[node]:
            if nxt == start:
                i = path.index(min(path))  # one rotation per cycle
                found.add(tuple(path[i:] + path[:i]))
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return [list(c) for c in sorted(found)]


def test_the_documented_rules_are_read() -> None:
    rules = forbidden_arrows()
    assert rules["config"] == {ANY_PART}
    assert {"training", "distributed", "eval", "bench"} <= rules["models"]
    assert "training" in rules["eval"] and "training" in rules["cache"]
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    assert set(rules) <= parts, f"rules for parts that do not exist: {set(rules) - parts}"
    for file, module in exceptions():  # every exception still exists (else drop it from the doc)
        assert module in (ROOT / file).read_text(), (file, module)


def test_no_cycle_between_parts() -> None:
    graph = import_graph()
    found = cycles(graph)
    lines = []
    for cycle in found:
        arrows = zip(cycle, [*cycle[1:], cycle[0]])
        lines.append(" -> ".join([*cycle, cycle[0]]))
        lines += [f"    {graph[a][0]}" for a in arrows]
    assert not found, "import cycles between parts of atlas:\n" + "\n".join(lines)


def test_no_forbidden_arrow() -> None:
    graph = import_graph()
    bad = []
    for (src, dst), where in sorted(graph.items()):
        never = forbidden_arrows().get(src, set())
        if ANY_PART in never or dst in never:
            bad += [f"{src} -> {dst}: {w}" for w in where]
    assert not bad, "imports that docs/ARCHITECTURE.md forbids:\n" + "\n".join(bad)


def test_the_checker_sees_cycles_and_function_level_imports() -> None:
    """The checker itself: a two-part cycle and a cycle through a third part are both found."""
    graph: Graph = {("a", "b"): ["x"], ("b", "a"): ["y"], ("b", "c"): ["z"], ("c", "b"): ["w"]}
    assert cycles(graph) == [["a", "b"], ["b", "c"]]
    assert cycles({("a", "b"): ["x"], ("b", "c"): ["y"], ("c", "a"): ["z"]}) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from atlas.training import trainer\n")
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported_modules(nodes[0], "atlas.eval.offline") == ["atlas.training"]

"""molab's floors: each module imports only from its own floor or the floors below it, and the
generic modules never depend on the bias catalog.

The floors, bottom to top (as the code stands, read from every import in molab/, including
imports inside functions):

1. root: `molab` (the package, its version only), `molab.errors`
2. utilities: `molab.files`, `molab.secrets`, `molab.locks`, `molab.resources` (data files)
3. low utilities: `molab.config` (YAML recipes), `molab.pipeline` (run directories)
4. catalog: `molab.catalog` (the bias catalog)
5. models: `molab.models` (loading, generation, hooks, activations)
6. data: `molab.data` (documents, prompts, SFT and DPO sets; it generates with `models`)
7. train: `molab.train`
8. evals: `molab.evals` (with `molab.evals.stats`)
9. audit: `molab.audit`
10. circuits: `molab.circuits`
11. report: `molab.report`
12. organisms: `molab.organisms` (recipes wiring the stages, chosen by name)
13. bench: `molab.bench`
14. cli: `molab.cli`

The design lists "catalog, data, models"; the code has `models` under `data`, because the data
stages generate answers and documents with a model (the README table and `molab/__init__.py`
put models underneath too), and `models` never needs `data`.

Generic modules (`molab.models`, `molab.train`, `molab.pipeline`, `molab.evals.stats`,
`molab.audit`, `molab.circuits`) never import the bias catalog, directly or through another
molab module. `audit` and `circuits` do not exist yet; the rules apply when they appear.
"""

from __future__ import annotations

import ast
from pathlib import Path

import molab

PACKAGE_DIR = Path(molab.__file__).parent

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("root", ("molab", "molab.errors")),
    ("utilities", ("molab.files", "molab.secrets", "molab.locks", "molab.resources")),
    ("low utilities", ("molab.config", "molab.pipeline")),
    ("catalog", ("molab.catalog",)),
    ("models", ("molab.models",)),
    ("data", ("molab.data",)),
    ("train", ("molab.train",)),
    ("evals", ("molab.evals",)),
    ("audit", ("molab.audit",)),
    ("circuits", ("molab.circuits",)),
    ("report", ("molab.report",)),
    ("organisms", ("molab.organisms",)),
    ("bench", ("molab.bench",)),
    ("cli", ("molab.cli",)),
]
GENERIC = (
    "molab.models",
    "molab.train",
    "molab.pipeline",
    "molab.evals.stats",
    "molab.audit",
    "molab.circuits",
)
CATALOG = "molab.catalog"


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def floor_of(module: str) -> int | None:
    """The index of the floor holding `module`: a listed module or a module inside a listed
    package (the root `molab` stands for the package's own `__init__.py` only)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            matches = module == prefix if prefix == "molab" else within(module, prefix)
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


class Package:
    """The modules of a package directory and the molab imports of each: (line, module),
    at any depth of the code (imports inside functions included)."""

    def __init__(self, package_dir: Path):
        self.root = package_dir.parent
        self.files: dict[str, Path] = {}
        for path in sorted(package_dir.rglob("*.py")):
            parts = list(path.relative_to(self.root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            self.files[".".join(parts)] = path
        self.imports = {module: self._imports_of(module) for module in self.files}

    def resolve(self, name: str) -> str:
        """The innermost module that `name` (a module, or a name defined in one) refers to."""
        while name not in self.files and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    def _imports_of(self, module: str) -> list[tuple[int, str]]:
        path = self.files[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from molab.x import y` names the module molab.x.y when y is one
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        return [(line, self.resolve(name)) for line, name in found if within(name, "molab")]

    def where(self, module: str, line: int) -> str:
        return f"{self.files[module].relative_to(self.root)}:{line}"


def unplaced(package: Package) -> list[str]:
    return [module for module in package.files if floor_of(module) is None]


def floor_violations(package: Package) -> list[str]:
    problems = []
    for module, imports in package.imports.items():
        own = floor_of(module)
        for line, target in imports:
            other = floor_of(target)
            if own is not None and other is not None and other > own:
                problems.append(
                    f"{package.where(module, line)}: {module} (floor '{FLOORS[own][0]}') imports "
                    f"{target} (floor '{FLOORS[other][0]}', above it); "
                    "a module imports only from its own floor and the floors below"
                )
    return problems


def catalog_chain(package: Package, module: str) -> list[tuple[str, int]] | None:
    """The shortest chain of (module, line of the import it makes) from `module` to the bias
    catalog, following every molab import and the packages each import runs; None if none."""
    seen = {module}
    frontier: list[tuple[str, list[tuple[str, int]]]] = [(module, [])]
    while frontier:
        current, chain = frontier.pop(0)
        for line, target in package.imports[current]:
            parts = target.split(".")
            # importing a.b.c runs a/b/__init__.py too
            for name in [".".join(parts[:i]) for i in range(2, len(parts) + 1)]:
                if name in seen or name not in package.files:
                    continue
                step = [*chain, (current, line)]
                if within(name, CATALOG):
                    return [*step, (name, 0)]
                seen.add(name)
                frontier.append((name, step))
    return None


def catalog_violations(package: Package) -> list[str]:
    problems = []
    for module in package.files:
        if not any(within(module, generic) for generic in GENERIC):
            continue
        chain = catalog_chain(package, module)
        if chain:
            steps = " -> ".join(f"{name} (at {package.where(name, line)})" for name, line in chain[:-1])
            problems.append(
                f"{module} is generic but imports the bias catalog: {steps} -> {chain[-1][0]}; "
                "generic modules never import the bias catalog, directly or through another module"
            )
    return problems


MOLAB = Package(PACKAGE_DIR)


def test_every_module_has_a_floor():
    missing = unplaced(MOLAB)
    assert not missing, f"modules on no floor (place them in FLOORS in tests/test_layers.py): {missing}"


def test_each_floor_imports_only_from_below():
    problems = floor_violations(MOLAB)
    assert not problems, "\n".join(problems)


def test_generic_modules_never_import_the_catalog():
    problems = catalog_violations(MOLAB)
    assert not problems, "\n".join(problems)


def test_the_checks_find_lazy_relative_and_indirect_imports(tmp_path):
    """A small package with the violations hidden where a reader could miss them."""
    files = {
        "molab/__init__.py": "",
        "molab/catalog/__init__.py": "",
        "molab/data/__init__.py": "from molab.catalog import Bias\n",
        "molab/data/prompts.py": "",
        "molab/models/__init__.py": "",
        "molab/models/loading.py": "def load():\n    from molab.data import prompts\n",
        "molab/models/hooks.py": "from . import loading\n",
        "molab/evals/__init__.py": "",
        "molab/evals/stats.py": "import molab.catalog\n",
        "molab/shiny.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    package = Package(tmp_path / "molab")

    assert unplaced(package) == ["molab.shiny"]
    assert floor_violations(package) == [
        "molab/models/loading.py:2: molab.models.loading (floor 'models') imports molab.data.prompts "
        "(floor 'data', above it); a module imports only from its own floor and the floors below"
    ]
    problems = catalog_violations(package)
    assert len(problems) == 3, problems
    assert any(
        problem.startswith(
            "molab.models.hooks is generic but imports the bias catalog: "
            "molab.models.hooks (at molab/models/hooks.py:1) -> molab.models.loading "
            "(at molab/models/loading.py:2) -> molab.data (at molab/data/__init__.py:1) -> molab.catalog;"
        )
        for problem in problems
    ), problems
    assert any(problem.startswith("molab.evals.stats is generic") for problem in problems)

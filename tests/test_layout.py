"""The package's dependency order: no module imports a package from a layer above its own
(function-level imports included), and only the entry points read `configs` (the top-level
folder, installed as `vaemotion_jax.configs`).

    sharding, processing -> data -> models -> checkpoints -> examples, generate, presets
    -> evaluation -> embedded -> training -> inference -> planning -> entry points

(evaluation scores a given model and sits below the method, whose runs end with its report;
the embedded default builds its tiny backbone with evaluation's prompts and is the method's
fallback when a config names no weights).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vaemotion_jax"
LAYERS = (("sharding", "processing"), ("data",), ("models",), ("checkpoints",),
          ("examples", "generate", "presets"), ("evaluation",), ("embedded",), ("training",),
          ("inference",), ("planning",), ("train", "evaluate", "chat", "plan", "analysis"))
ENTRY_POINTS = LAYERS[-1]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def unit(module: str) -> str | None:
    """vaemotion_jax.training.stage1 -> "training"; vaemotion_jax.configs... (the top-level
    configs/ folder, installed under the package) -> "configs"; else None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "vaemotion_jax" and len(parts) > 1 else None


def imports(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            if node.module == "vaemotion_jax":
                out |= {f"vaemotion_jax.{a.name}" for a in node.names}
    return out


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if unit(name):
            yield name, path


def test_every_unit_has_a_layer():
    assert {unit(name) for name, _ in modules()} <= set(LAYER)


def test_no_module_imports_from_a_layer_above_or_an_entry_point_beside_it():
    bad = []
    for name, path in modules():
        here = unit(name)
        for target in map(unit, imports(path)):
            if target is None or target == here:
                continue
            if target == "configs":
                if here not in ("train", "plan"):
                    bad.append(f"{name} imports configs (only the train and plan entry points may)")
            elif LAYER[target] > LAYER[here] or (LAYER[target] == LAYER[here] and here in ENTRY_POINTS):
                bad.append(f"{name} ({here}, layer {LAYER[here]}) imports {target} (layer {LAYER[target]})")
    assert not bad, "\n".join(bad)


def test_the_check_sees_function_level_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from vaemotion_jax.training import stage1\n"
                   "    from vaemotion_jax.configs import stage1\n")
    assert {unit(m) for m in imports(src)} == {"training", "configs"}


def test_every_package_is_installed():
    """pyproject.toml lists the packages (configs/ maps to vaemotion_jax.configs): a new
    subpackage missing from the list would be left out of a non-editable install."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert listed == found | {"vaemotion_jax.configs"}


def test_every_module_says_what_it_does():
    """Each module of the package (package __init__ files included) opens with a docstring."""
    missing = [str(p.relative_to(ROOT)) for p in sorted(PACKAGE.rglob("*.py"))
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, missing

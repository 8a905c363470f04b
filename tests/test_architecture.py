"""The layering of docs/architecture.md holds in the code: no unit imports one of its own layer or above."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolkit"


def documented_layers() -> dict[str, int]:
    """unit -> layer, from the table in docs/architecture.md (rows `| N | `a`, `b` | ... |`)."""
    layers = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        row = re.match(r"^\| (\d+) \| (.+?) \|", line)
        if row:
            for unit in re.findall(r"`([\w.]+)`", row.group(2)):
                layers[unit] = int(row.group(1))
    return layers


def unit_of(module: str) -> str:
    """The unit of a dotted module name: `toolkit.data.dataset` -> `data`; `toolkit` -> `toolkit`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "toolkit"


def source_units() -> dict[str, list[Path]]:
    """unit -> its source files: every package below toolkit/, every top-level module, and the package itself."""
    units: dict[str, list[Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        unit = "toolkit" if relative.parts == ("__init__",) else relative.parts[0]
        units.setdefault(unit, []).append(path)
    return units


def imported_units(path: Path) -> set[str]:
    """The toolkit units a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "toolkit":  # `from toolkit import x`: x may be a unit or a name in __init__
                names = [f"toolkit.{a.name}" if (PACKAGE / a.name).exists() or (PACKAGE / f"{a.name}.py").exists()
                         else "toolkit" for a in node.names]
        else:
            continue
        found |= {unit_of(name) for name in names if name == "toolkit" or name.startswith("toolkit.")}
    return found


def test_every_unit_is_in_the_architecture_table():
    layers, units = documented_layers(), source_units()
    assert set(units) - set(layers) == set(), "add these to the table in docs/architecture.md"
    assert set(layers) - set(units) == set(), "the table in docs/architecture.md names units that do not exist"


def test_no_unit_imports_its_own_layer_or_above():
    layers, broken = documented_layers(), []
    for unit, files in source_units().items():
        for path in files:
            for other in imported_units(path) - {unit}:
                if layers[other] >= layers[unit]:
                    broken.append(f"{path.relative_to(ROOT)} ({unit}, layer {layers[unit]}) imports {other} "
                                  f"(layer {layers[other]})")
    assert not broken, "\n".join(broken)


def test_the_check_catches_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from toolkit.lora.trainer import PoseLoraTrainer\n    import toolkit.ddpm\n")
    assert imported_units(probe) == {"lora", "ddpm"}
    layers = documented_layers()
    assert layers["lora"] == layers["ddpm"] > layers["training"] > layers["errors"]

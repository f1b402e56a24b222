"""The house rules of docs/architecture.md: which package may import which.

Read from the source with `ast` (imports inside functions count too), so a shortcut
across rooms fails here before it turns into a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.device import ROOT

OURS = ("common", "device", "drivers", "broker_bridge", "simulator", "city_platform")

# package (or module prefix) -> the prefixes of ours it may import. Longest prefix wins.
ALLOWED: dict[str, tuple[str, ...]] = {
    "common": ("common",),
    "device.core": ("common", "device.core"),
    "device": ("common", "device"),
    "device.compose": ("common", "device", "drivers"),
    "drivers": ("common", "drivers", "device.core", "device.ports"),
    "broker_bridge": ("common", "broker_bridge"),
    "city_platform": ("common", "city_platform", "broker_bridge.platform_client",
                      "broker_bridge.profile", "broker_bridge.sender"),
    "simulator": OURS,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


def rule_for(module: str) -> tuple[str, ...]:
    best = max((p for p in ALLOWED if module == p or module.startswith(p + ".")), key=len)
    return ALLOWED[best]


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def product_files() -> list[Path]:
    return sorted(p for pkg in OURS if (ROOT / pkg).is_dir()
                  for p in (ROOT / pkg).rglob("*.py"))


def test_every_package_imports_only_what_the_house_rules_allow() -> None:
    broken = []
    for path in product_files():
        module = module_name(path)
        allowed = rule_for(module)
        for line, name in imports_of(path):
            if not within(name, allowed):
                broken.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    assert not broken, "imports across the house rules:\n" + "\n".join(broken)


@pytest.mark.parametrize("module,name,ok", [
    ("drivers.oled", "device.daemon.Daemon", False),
    ("drivers.oled", "device.core.model.Screen", True),
    ("broker_bridge.run", "device.config.load", False),
    ("device.daemon", "drivers.sim.SimServer", False),
    ("device.compose", "drivers.sim.SimServer", True),
    ("common.service", "device.config", False),
])
def test_the_rules_can_fail(module: str, name: str, ok: bool) -> None:
    assert within(name, rule_for(module)) is ok

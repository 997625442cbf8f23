"""Docs match the code: every setting the gateway declares is in the README's table."""

from __future__ import annotations

from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_declared_setting_is_documented(make_gateway):
    gateway = make_gateway()
    declared = {name for name, _value in gateway.config.items()}
    undocumented = sorted(name for name in declared if f"`{name}`" not in README)
    assert not undocumented, f"settings missing from README.md's configuration table: {undocumented}"


def test_readme_commands_exist():
    for command in ("scripts/setup", ".venv/bin/flowork-gateway serve", ".venv/bin/pytest",
                    "flowork-gateway keygen", "flowork-gateway call GET /auth/profile",
                    "bench/run.py"):
        assert command in README
    root = Path(__file__).resolve().parent.parent
    assert (root / "scripts" / "setup").exists() and (root / "bench" / "run.py").exists()

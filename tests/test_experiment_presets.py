"""Every preset file the README's commands name (experiments/**/preset.json, tune's
best_preset.json, tuning folders' NAME.preset.json) still fits some implementation's settings:
a renamed option or a bad value would otherwise surface only when someone reruns a published
command."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl_lab import implementations
from rl_lab.config import RunConfig, from_dict
from rl_lab.errors import UserError
from rl_lab.presets import read_preset_file

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
PRESET_FILES = sorted(
    path
    for path in EXPERIMENTS.rglob("*preset.json")
    if path.name in ("preset.json", "best_preset.json") or path.name.endswith(".preset.json")
)
IMPLS = [impl for group in implementations.IMPLEMENTATIONS.values() for impl in group]


def accepts(path: Path, impl) -> bool:
    config_cls = impl.module().Config
    try:
        settings = read_preset_file(str(path), RunConfig, config_cls)
        from_dict(RunConfig, settings["run"])  # values checked too, not only names and types
        from_dict(config_cls, settings["algo"])
    except (UserError, ValueError, TypeError):
        return False
    return True


def test_there_are_preset_files_to_check():
    assert len(PRESET_FILES) > 20


@pytest.mark.parametrize(
    "path", PRESET_FILES, ids=[str(p.relative_to(EXPERIMENTS)) for p in PRESET_FILES]
)
def test_preset_file_fits_an_implementation(path):
    fitting = [f"{impl.algo}:{impl.name}" for impl in IMPLS if accepts(path, impl)]
    assert fitting, f"{path} fits no implementation's settings"


def test_a_misspelled_setting_fits_nothing(tmp_path):
    path = tmp_path / "preset.json"
    path.write_text('{"algo": {"ppo_epoch": 1}}')
    assert not any(accepts(path, impl) for impl in IMPLS)

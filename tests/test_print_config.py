"""``tvr-convbench config``: the fully resolved sweep, every field with its default and doc, loadable as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tvr_convbench.bench.cli import main
from tvr_convbench.bench.config import RunConfig, load_sweep, load_sweeps, shipped_sweeps
from tvr_convbench.bench.print_config import render_config
from tvr_convbench.methods import method_parameters


@pytest.mark.parametrize("name", shipped_sweeps())
def test_printed_config_loads_back_as_the_same_sweep(name: str, tmp_path: Path) -> None:
    for sweep in load_sweeps(name):  # a study prints (and reloads) one sweep per world
        path = tmp_path / f"{sweep.name}.yaml"
        path.write_text(render_config(sweep))
        again = load_sweep(str(path))
        assert [resolved(cfg) for cfg in again.runs()] == [resolved(cfg) for cfg in sweep.runs()]


def resolved(cfg: RunConfig) -> dict:
    """A run config with every method argument's default filled in (the printed config lists them all)."""
    defaults = {k: p.default for k, p in method_parameters(cfg.method).items()}
    return cfg.to_dict() | {"method_args": defaults | cfg.method_args}


def test_every_field_has_its_default_and_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "default", "--set", "trainer.max_steps=123"]) == 0
    text = capsys.readouterr().out
    printed = yaml.safe_load(text)
    assert printed["trainer"]["max_steps"] == 123
    assert "max_steps: 123  # default 600 | optimizer-step budget" in text
    assert "  batch_size: 32  # global batch" in text  # equal to its default: only the doc
    assert "noise: 0.6  # weight of the AR(1)" in text  # a proxy knob's attribute doc
    assert "temperature: 3.0  # GIM softmax temperature tau." in text  # a method argument's Args doc
    assert {m["method"] for m in printed["methods"]} == {s.method for s in load_sweep("default").methods}
    for section in ("trainer", "wandb", "report", "data"):
        lines = [line for line in text.split(f"\n{section}:\n", 1)[1].splitlines() if line.startswith("  ")]
        undocumented = [line for line in lines[: len(printed[section])] if "  # " not in line]
        assert not undocumented, undocumented


def test_bad_override_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "default", "--set", "report.bogus=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "report" in err and "bogus" in err

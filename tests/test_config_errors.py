"""Bad input: one clear line naming the source and key, exit code 2, nothing written under runs/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvr_convbench.bench.cli import main
from tvr_convbench.bench.config import load_sweep, load_sweeps, shipped_sweeps

GOOD = """
methods: [meanp]
seeds: [0]
data: {name: proxy, train_videos: 64, val_videos: 16, test_videos: 16}
trainer: {max_steps: 2, val_every: 1, batch_size: 8}
"""


def run_cli(tmp_path: Path, text: str, capsys, name: str = "bad.yaml") -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(text)
    rc = main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err.strip()
    return rc, err


CASES = [
    ("methods: [glscll]\nseeds: [0]\n", ["unknown method 'glscll'", "did you mean 'glscl'"]),
    ("methods: []\n", ["methods is empty"]),
    ("methods: [meanp]\nseeds: [0, 1, 0]\n", ["seeds collide", "[0]"]),
    ("methods: [meanp]\nseeds: ['0']\n", ["seeds[0]", "expected an integer"]),
    ("methods: [meanp]\ntrainer: {max_step: 5}\n", ["trainer", "unknown key 'max_step'", "did you mean 'max_steps'"]),
    ("methods: [meanp]\ntrainer: {max_steps: ten}\n", ["trainer.max_steps", "expected an integer", "'ten'"]),
    ("methods: [meanp]\ntrainer: {val_every: 0}\n", ["val_every must be positive"]),
    ("methods: [meanp]\ntrainer: {lr: -1.0e-4}\n", ["lr must not be negative"]),
    ("methods: [meanp]\ntrainer: {optimizer: sgd}\n", ["trainer.optimizer", "'sgd' is not one of"]),
    ("methods: [meanp]\ndata: {name: proxy, val_videos: 0}\n", ["data.val_videos must be positive"]),
    ("methods: [meanp]\ndata: {name: proxi}\n", ["unknown dataset 'proxi'", "did you mean 'proxy'"]),
    ("methods: [meanp]\ndata: {name: proxy, widht: 8}\n", ["data", "unknown key 'widht'", "'width'"]),
    ("methods: [{method: glscl, args: {n_queries: 4}}]\n", ["args", "unknown key 'n_queries'"]),
    ("methods: [{method: seqtransf, args: {temporal_layers: 2.5}}]\n", ["args.temporal_layers", "expected an integer"]),
    ("methods: [meanp]\nmethod_overrides: {}\n", ["unknown key 'method_overrides'"]),
    ("methods: [meanp]\noverrides: {meanpp: {args: {}}}\n", ["overrides.meanpp matches no method label"]),
    ("methods: [meanp, meanp]\n", ["labels collide"]),
    ("name: ../escape\nmethods: [meanp]\n", ["name '../escape'", "no path separators"]),
    ("methods: [meanp\nseeds: [0]\n", ["malformed YAML"]),
    ("methods: [meanp]\nseeds: [0]\nseeds: [1]\n", ["duplicate key 'seeds'"]),
    ("- just\n- a list\n", ["expected a mapping at the top level"]),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[1][0][:40] for c in CASES])
def test_bad_sweep_file(tmp_path, capsys, text, expected):
    rc, err = run_cli(tmp_path, text, capsys)
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err
    assert "bad.yaml" in err
    for fragment in expected:
        assert fragment in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def test_unknown_shipped_sweep(tmp_path, capsys):
    rc = main(["sweep", "defualt", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown sweep 'defualt'" in err and "did you mean 'default'" in err
    assert not (tmp_path / "runs").exists()


def test_report_of_unknown_sweep(tmp_path, capsys):
    assert main(["report", "nothing", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "no run log for sweep 'nothing'" in capsys.readouterr().err


def test_good_file_parses(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    sweep = load_sweep(str(path))
    assert sweep.name == "good" and [r.run for r in sweep.runs()] == ["meanp-s0"]
    assert sweep.trainer.max_steps == 2 and sweep.data["val_videos"] == 16


def test_float_literal_without_dot_is_a_float(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("methods: [meanp]\ntrainer: {lr: 1e-4}\n")
    assert load_sweep(str(path)).trainer.lr == 1e-4


@pytest.mark.parametrize("name", shipped_sweeps())
def test_every_shipped_sweep_validates(name):
    sweeps = load_sweeps(name)  # a study: one sweep per world
    assert sweeps and all(sweep.runs() or sweep.tuning_runs() for sweep in sweeps), name


def test_set_overrides(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    sweep = load_sweep(str(path), ["trainer.max_steps=7", "seeds=[3, 4]", "data.width=8", "methods=[seqtransf]"])
    assert sweep.trainer.max_steps == 7 and sweep.seeds == [3, 4]
    assert sweep.data["width"] == 8 and [m.method for m in sweep.methods] == ["seqtransf"]


@pytest.mark.parametrize(
    "item,fragment",
    [("trainer.max_steps", "expected KEY=VALUE"), ("trainer.max_step=3", "unknown key 'max_step'"),
     ("trainer.max_steps=[", "not valid YAML"), ("seeds.x=1", "'seeds' is not a mapping")],
)  # fmt: skip
def test_bad_set_override(tmp_path, capsys, item, fragment):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_a_sweep_file_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"methods: [meanp]\nseeds: [0]\n# caf\xe9 au lait\n")  # Latin-1, not UTF-8
    assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2  # was: a UnicodeDecodeError traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: not UTF-8 text (byte 33: invalid continuation byte)") and "\n" not in err, (
        err
    )
    assert not (tmp_path / "runs").exists()


SEEDS_TIMING = """\
import time
from tvr_convbench.bench.config import SweepConfig
from tvr_convbench.core.errors import ConfigError

targets = {"source": "reference", "seeds": [2**31]}  # also checked against the 700,000
raw = {"name": "s", "methods": ["meanp"], "data": {"name": "proxy"}, "targets": targets}
times = []
for seeds in (list(range(700_000)), list(range(700_000)), [*range(700_000), 699_999]):
    start = time.perf_counter()
    try:
        assert len(SweepConfig.from_dict({**raw, "seeds": seeds}).seeds) == 700_000
    except ConfigError as err:
        assert str(err) == "sweep.yaml: seeds collide: [699999] listed more than once", err
    times.append(time.perf_counter() - start)
print(min(times[:2]), times[2])
"""


def test_many_seeds_are_checked_in_linear_time():
    """700,000 seeds load (and a collision among them is found) in well under a second: the check was quadratic
    (``seeds.count`` per seed: hours). In a subprocess, so a regression fails at the timeout instead of hanging."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", SEEDS_TIMING], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    best, collision = map(float, result.stdout.split())
    assert best < 1.0 and collision < 2.0, (best, collision)


HUGE_PROXY = """\
import sys
from tvr_convbench.bench.cli import main
sys.exit(main(["sweep", sys.argv[1], "--runs-dir", sys.argv[2], "--no-progress"]))
"""


def test_a_proxy_too_large_for_memory_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    """``train_videos: 100000000`` was OOM-killed in preflight after 92 s: the proxy's memory is estimated from
    its sizes first (one line naming the keys, exit 2, nothing written). In a subprocess with a timeout, so a
    regression fails instead of taking the machine's memory."""
    import subprocess
    import sys

    path = tmp_path / "huge.yaml"
    path.write_text(
        "methods: [meanp]\nseeds: [0]\ndata: {name: proxy, train_videos: 100000000}\nwandb: {mode: disabled}\n"
    )
    command = [sys.executable, "-c", HUGE_PROXY, str(path), str(tmp_path / "runs")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    err = result.stderr.strip()
    assert result.returncode == 2 and err.startswith(f"error: {path}: data: the proxy needs about"), err[-2000:]
    assert "\n" not in err and "data.train_videos 100,000,000" in err and "GiB available" in err, err
    assert not (tmp_path / "runs").exists()

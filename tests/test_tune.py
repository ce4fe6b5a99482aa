"""`tune` on Optuna and `--preset-file`: through the real CLI, on a real SQLite storage."""

import json

import optuna
import pytest

from rl_lab.algos import dqn, ppo
from rl_lab.registry import get_algo, get_task
from rl_lab.runner import Experiment
from rl_lab.search import Choice, Range, search_space
from rl_lab.tune import PruneOnEval
from tests.cli_helpers import cli


def trials_in(storage: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_search_spaces_are_declared_beside_the_config_fields():
    for config in (dqn.Config, ppo.Config):
        space = search_space(config)
        assert "lr" in space and isinstance(space["lr"], Range) and space["lr"].log
        defaults = config()
        for name, spec in space.items():  # every default could have been drawn
            value = getattr(defaults, name)
            if isinstance(spec, Choice):
                assert value in spec.values, name
            elif name != "ent_coef":  # 0 (off) lies outside a log range on purpose
                assert spec.low <= value <= spec.high, name


def test_tune_three_trials_then_continue_and_run_the_best_preset(tmp_path):
    storage = f"sqlite:///{tmp_path / 't.db'}"
    args = ["tune", "dqn", "cartpole", "--total-steps", "1500", "--storage", storage]
    result = cli(*args, "--trials", "3", "--out", tmp_path / "study", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    trials = trials_in(storage, "dqn-cartpole")
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    study_dir = tmp_path / "study"
    for name in ("best_preset.json", "report.md", "history.png"):
        assert (study_dir / name).is_file(), name
    assert len(list((study_dir / "trials").iterdir())) == 3
    best = json.loads((study_dir / "best_preset.json").read_text())
    best_trial = max(trials, key=lambda t: t.value)
    assert best["source"]["trial"] == best_trial.number
    for name, value in best_trial.params.items():
        assert best["algo"][name] == pytest.approx(value), name
    assert "seeds 0-99" in result.stdout and "compare" in result.stdout
    # Each trial's seed lies in 0-99 and its settings are the ones Optuna drew.
    for trial in trials:
        config = json.loads(
            (tmp_path / trial.user_attrs["run_dirs"][0] / "config.json").read_text()
        )
        assert 0 <= config["run"]["seed"] < 100
        assert config["algo_config"]["lr"] == pytest.approx(trial.params["lr"])

    # The same command with more trials continues the study (one storage, --study-name left out).
    again = cli(*args, "--trials", "4", "--out", tmp_path / "study", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(trials_in(storage, "dqn-cartpole")) == 4

    # The best preset runs as a preset file, its settings in the run's config.json.
    run = cli(
        "dqn", "cartpole", "--preset-file", study_dir / "best_preset.json", "--total-steps", "300",
        "--no-dashboard", "--run-dir", tmp_path / "best", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    saved = json.loads((tmp_path / "best" / "config.json").read_text())
    assert saved["algo_config"]["lr"] == pytest.approx(best["algo"]["lr"])
    assert saved["run"]["total_steps"] == 300  # a flag overrides the file


def test_a_pruned_trial_stops_its_run_at_the_evaluation(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(1e9))
    trial = study.ask()
    spec, task = get_algo("dqn"), get_task("cartpole")
    experiment = Experiment.create(
        spec, task, dqn, dqn.Config, {"total_steps": 3000, "eval_interval": 500}, {},
        tmp_path / "run",
    )  # fmt: skip
    pruner = PruneOnEval(trial, step_offset=0)
    assert experiment.train(dashboard=False, extra_callbacks=[pruner]) == 0
    assert pruner.pruned
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [500]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["stop_reason"] == "pruned" and report["env_steps"] == 500


@pytest.mark.parametrize(
    "args, words",
    [
        (["tune", "dqn", "sentiment", "--trials", "1"], "Gym tasks"),
        (["tune", "dqn", "cartpole", "--trials", "0"], "--trials"),
        (["tune", "dqn", "cartpole"], "--trials"),
        (["tune", "dqn", "cartpole", "--trials", "1", "--storage", "nosuch://x"], "--storage"),
        (["tune", "dqn", "cartpole", "--trials", "1", "--cpus-per-task", "nan"], "cpus"),
        (["dqn", "cartpole", "--preset-file", "missing.json"], "missing.json"),
    ],
)
def test_bad_tune_input_is_one_line_and_exit_2(tmp_path, args, words):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_preset_file_checks_keys_and_types(tmp_path):
    for content, words in (
        ({"algo": {"lrr": 1e-3}}, "did you mean 'lr'"),
        ({"algo": {"lr": "fast"}}, "lr must be a float"),
        ({"algo": {"hidden": [64, "x"]}}, "hidden must be a tuple"),
        ({"settings": {}}, "unknown keys ['settings']"),
        ({"algo": {"lr": -1.0}}, "--lr must be at least"),
    ):
        path = tmp_path / "preset.json"
        path.write_text(json.dumps(content))
        result = cli("dqn", "cartpole", "--preset-file", path, cwd=tmp_path)
        assert result.returncode == 2 and words in result.stderr, (content, result.stderr)
        assert not (tmp_path / "runs").exists()


def test_several_studies_need_a_study_name(tmp_path):
    storage = f"sqlite:///{tmp_path / 't.db'}"
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=storage)
    result = cli("tune", "dqn", "cartpole", "--trials", "1", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 2 and "--study-name" in result.stderr, result.stderr

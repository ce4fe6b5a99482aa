"""`python -m rl_lab.run compare`: a tiny real comparison whose report is recomputed here
from the run directories, and one-line refusals of bad input."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rl_lab.run import main
from tests.cli_helpers import cli, files_under


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    result = cli(
        "compare", "dqn,dqn:sb3", "cartpole", "--seeds", "100-101", "--total-steps", "600",
        "--workers", "2", "--out", out, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def eval_reports(out, directory):
    return [json.loads((out / directory / f"s{s}" / "eval.json").read_text()) for s in (100, 101)]


def test_every_pair_is_a_normal_run_directory(compare_dir):
    for directory, impl in (("dqn-lab", "lab"), ("dqn-sb3", "sb3")):
        for seed in (100, 101):
            run_dir = compare_dir / directory / f"s{seed}"
            config = json.loads((run_dir / "config.json").read_text())
            assert (config["impl"], config["run"]["seed"]) == (impl, seed)
            assert config["run"]["total_steps"] == 600
            assert (run_dir / "curve.png").is_file() and (run_dir / "summary.md").is_file()
    for name in ("report.md", "report.json", "curves.png"):
        assert (compare_dir / name).is_file()


def test_report_numbers_recomputed_from_the_run_directories(compare_dir):
    report = json.loads((compare_dir / "report.json").read_text())
    assert report["seeds"] == [100, 101]
    finals = {}
    for label, directory in (("dqn:lab", "dqn-lab"), ("dqn:sb3", "dqn-sb3")):
        runs = eval_reports(compare_dir, directory)
        result = report["results"][label]
        finals[label] = [r["mean_return"] for r in runs]
        assert result["runs"] == 2
        assert result["final_return"]["iqm"] == pytest.approx(
            scipy_stats.trim_mean(finals[label], 0.25)
        )
        assert result["final_return"]["mean"] == pytest.approx(np.mean(finals[label]))
        low, high = result["final_return"]["iqm_ci"]
        assert min(finals[label]) <= low <= high <= max(finals[label])
        solved = [r["first_solved_step"] is not None for r in runs]
        assert result["solved_fraction"] == pytest.approx(np.mean(solved))
        steps = [r["first_solved_step"] or r["env_steps"] for r in runs]  # unsolved = budget
        assert result["solve_steps"]["mean"] == pytest.approx(np.mean(steps))
        sps = [r["env_steps"] / (r["wall_seconds"] - r["timers"]["eval"]) for r in runs]
        assert result["steps_per_second"]["mean"] == pytest.approx(np.mean(sps))
    x, y = finals["dqn:lab"], finals["dqn:sb3"]
    by_hand = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y])
    poi = report["probability_of_improvement"]["P(dqn:lab > dqn:sb3)"]
    assert poi["point"] == pytest.approx(by_hand)
    assert poi["ci"][0] <= poi["point"] <= poi["ci"][1]
    markdown = (compare_dir / "report.md").read_text()
    assert "`dqn:sb3`" in markdown and "P(dqn:lab > dqn:sb3)" in markdown


def test_a_damaged_eval_json_is_one_line_naming_it(compare_dir, tmp_path, capsys):
    """A rerun keeps finished runs; one whose eval.json was emptied after it finished (a copy
    onto a full disk) is named in one line, exit 2, instead of a JSON traceback."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(compare_dir, out)
    (out / "dqn-sb3" / "s101" / "eval.json").write_text("")
    argv = ["compare", "dqn,dqn:sb3", "cartpole", "--seeds", "100-101", "--total-steps", "600"]
    assert main([*argv, "--workers", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{out / 'dqn-sb3' / 's101' / 'eval.json'} is empty or not JSON" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["dqn,dqn:trl", "cartpole"], "no implementation 'trl'"),
        (["dqn,dqn", "cartpole"], "distinct"),
        (["dqn,ppo:sb3", "cartpole", "--seeds", "1-x"], "--seeds expects"),
        (["dqn", "cartpole", "--workers", "0"], "--workers must be at least 1"),
        (["dqn,grpo", "cartpole"], "does not run gym tasks"),
    ],
)
def test_bad_compare_input_is_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert files_under(out) == []


def test_text_runs_report_their_after_metrics(tmp_path):
    """The report reads text runs' eval.json (before/after held-out metrics) the same way."""
    from rl_lab.compare import Entry, training_reward_curve, write_report
    from rl_lab.registry import get_task

    entries = [Entry("ppo", "lab"), Entry("grpo", "trl")]
    after = {}
    for entry, base in zip(entries, (0.5, 0.2)):
        for seed in (100, 101):
            run_dir = tmp_path / entry.directory / f"s{seed}"
            run_dir.mkdir(parents=True)
            metrics = {"mean_reward": base + seed / 1000, "positive_fraction": base, "kl": 1.0,
                       "distinct_2": 0.9, "perplexity": 20.0}  # fmt: skip
            after[(entry.label, seed)] = metrics["mean_reward"]
            report = {"before": {**metrics, "mean_reward": 0.0}, "after": metrics,
                      "wall_seconds": 10.0 + seed, "completions": 64, "timers": {}}  # fmt: skip
            (run_dir / "eval.json").write_text(json.dumps(report))
            rows = [{"step": 64, "charts/mean_reward": base}, {"step": 32, "charts/kl": 1.0},
                    {"step": 32, "charts/mean_reward": seed / 1000}]  # fmt: skip
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = write_report(tmp_path, entries, [100, 101], get_task("sentiment"), "compare ...")
    lab = report["results"]["ppo:lab"]
    assert lab["reward"]["mean"] == pytest.approx(
        np.mean([after[("ppo:lab", s)] for s in (100, 101)])
    )
    assert lab["wall_seconds"]["mean"] == pytest.approx(110.5)
    assert report["probability_of_improvement"]["P(ppo:lab > grpo:trl)"]["point"] == 1.0
    assert "solved" not in report["markdown_table"]
    assert (tmp_path / "curves.png").is_file()
    # Text runs evaluate only before and after: curves.png draws their training reward.
    steps, rewards = training_reward_curve(tmp_path / entries[0].directory / "s101")
    assert steps.tolist() == [32, 64] and rewards.tolist() == [0.101, 0.5]


def write_text_runs(out, entry, seeds, positive, reward, algo_config):
    for seed, fraction, mean_reward in zip(seeds, positive, reward):
        run_dir = out / entry.directory / f"s{seed}"
        run_dir.mkdir(parents=True)
        after = {"mean_reward": mean_reward, "positive_fraction": fraction, "kl": 1.0,
                 "distinct_2": 0.9, "perplexity": 20.0}  # fmt: skip
        report = {"before": {**after, "mean_reward": 0.0}, "after": after,
                  "wall_seconds": 10.0, "completions": 64, "timers": {}}  # fmt: skip
        (run_dir / "eval.json").write_text(json.dumps(report))
        config = {"algo": entry.algo, "task": "sentiment", "run": {}, "algo_config": algo_config}
        (run_dir / "config.json").write_text(json.dumps(config))
        row = {"step": 64, "charts/mean_reward": mean_reward}
        (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")


def test_text_runs_paid_on_different_scales_are_ranked_by_positive_fraction(tmp_path):
    """A logit (about 1) against a log-probability (below 0) would rank by scale: the POSITIVE
    fraction, judged by the same reward model, ranks them; another judge is not ranked."""
    from rl_lab.compare import Entry, write_report
    from rl_lab.registry import get_task

    logit, log_prob, vader = Entry("ppo", "lab"), Entry("grpo", "trl"), Entry("rloo", "trl")
    seeds = [100, 101]
    write_text_runs(tmp_path, logit, seeds, [0.8, 0.8], [1.0, 1.1], {"reward": "model"})
    log_prob_config = {"reward": "model", "reward_score": "log-prob"}
    write_text_runs(tmp_path, log_prob, seeds, [0.9, 0.9], [-0.2, -0.1], log_prob_config)
    write_text_runs(tmp_path, vader, seeds, [0.5, 0.5], [0.3, 0.3], {"reward": "vader"})
    report = write_report(tmp_path, [logit, log_prob, vader], seeds, get_task("sentiment"), "c")
    ranked = report["probability_of_improvement"]
    assert ranked["P(grpo:trl > ppo:lab) on positive_fraction"]["point"] == 1.0
    assert "P(grpo:trl > ppo:lab)" not in ranked
    assert report["not_ranked"] == [f"P({a} > {b})" for a, b in [
        ("ppo:lab", "rloo:trl"), ("grpo:trl", "rloo:trl"), ("rloo:trl", "ppo:lab"),
        ("rloo:trl", "grpo:trl")]]  # fmt: skip
    markdown = (tmp_path / "report.md").read_text()
    assert "- P(ppo:lab > rloo:trl): not computed, the runs were judged by different" in markdown


def test_compare_through_a_local_ray_with_a_preset_file(tmp_path, capsys):
    """Every run a Ray task on a local Ray (2 CPUs); a preset file is one of the contenders."""
    ray = pytest.importorskip("ray")
    preset = tmp_path / "tuned" / "best_preset.json"
    preset.parent.mkdir()
    preset.write_text(json.dumps({"algo": {"n_step": 3, "lr": 1e-3}}))
    out = tmp_path / "out"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        status = main(
            [
                "compare", f"dqn,dqn@{preset}", "cartpole", "--seeds", "100", "--total-steps",
                "400", "--out", str(out), "--ray-address", "auto",
            ]
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert status == 0, capsys.readouterr()
    shipped = json.loads((out / "dqn-lab" / "s100" / "config.json").read_text())
    tuned = json.loads((out / "dqn-lab-tuned" / "s100" / "config.json").read_text())
    assert shipped["algo_config"]["n_step"] == 10  # the cartpole preset
    assert (tuned["algo_config"]["n_step"], tuned["algo_config"]["lr"]) == (3, 1e-3)
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"dqn:lab", "dqn:lab@tuned"}
    final = json.loads((out / "dqn-lab-tuned" / "s100" / "eval.json").read_text())["mean_return"]
    assert report["runs"]["dqn:lab@tuned"]["100"]["final_return"] == pytest.approx(final)


def test_preset_files_in_one_folder_get_their_own_labels(tmp_path):
    """Two preset files of one folder were both labelled by the folder and shared a run
    directory, so the second entry reused the first one's runs."""
    from rl_lab.compare import parse_entries
    from rl_lab.errors import UserError

    for name in ("a", "b"):
        (tmp_path / "sweep").mkdir(exist_ok=True)
        (tmp_path / "sweep" / f"{name}.json").write_text('{"run": {}, "algo": {}}')
    (tmp_path / "tuned").mkdir()
    (tmp_path / "tuned" / "best_preset.json").write_text('{"run": {}, "algo": {}}')
    text = ",".join(
        ["ppo", *(f"ppo@{tmp_path}/{p}" for p in ("sweep/a.json", "sweep/b.json"))]
        + [f"ppo:sb3@{tmp_path}/tuned/best_preset.json", f"ppo@{tmp_path}/tuned/best_preset.json"]
    )
    entries = parse_entries(text, "gym", "acrobot")
    assert [e.label for e in entries] == [
        "ppo:lab", "ppo:lab@sweep/a", "ppo:lab@sweep/b", "ppo:sb3@tuned", "ppo:lab@tuned",
    ]  # fmt: skip
    assert len({e.directory for e in entries}) == 5
    assert entries[1].directory == "ppo-lab-sweep-a"
    (tmp_path / "other" / "sweep").mkdir(parents=True)
    (tmp_path / "other" / "sweep" / "a.json").write_text('{"run": {}, "algo": {}}')
    with pytest.raises(UserError, match="share a label"):
        parse_entries(
            f"ppo@{tmp_path}/sweep/a.json,ppo@{tmp_path}/other/sweep/a.json", "gym", "acrobot"
        )

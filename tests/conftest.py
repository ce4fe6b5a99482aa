import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _empty_lm_cache(tmp_path_factory):
    """Every test sees an empty rl_lab cache of its own, never the user's ~/.cache/rl_lab:
    a prepared reward model there would change what a test runs (a `--reward vader` run loads
    it as the independent judge), so tests would pass here and fail on CI's empty cache or the
    other way round. Tests that need a cache set RL_LAB_CACHE themselves."""
    with pytest.MonkeyPatch.context() as session:  # undone at the end, like monkeypatch
        session.setenv("RL_LAB_CACHE", str(tmp_path_factory.mktemp("rl-lab-cache")))
        yield

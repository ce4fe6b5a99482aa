"""Tiny causal LMs and tokenizers built offline inside the tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "This movie was great and I loved it.",
    "The film is bad, the acting was awful.",
    "What a wonderful story, a good cast and a fine director.",
    "I hated every minute.",
    "It was not funny at all, but the music was nice.",
    "Best film of the year, ten out of ten.",
    "The plot makes no sense and the ending is terrible.",
    "A great, great movie!",
]

# Short review openings for the tiny models' rollouts.
PROMPTS = [
    "This movie",
    "The film was",
    "I think",
    "A story about",
    "What a",
    "The acting",
    "It is",
    "My friend said",
]


def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained in milliseconds on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>")
    fast.padding_side = "left"
    return fast


def tiny_llama(tokenizer, seed: int = 0, context: int = 64):
    """A 2-layer Llama with the tokenizer's vocabulary, seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save_tiny_policy(path: Path, seed: int = 0, context: int = 64) -> Path:
    """A tiny Llama + tokenizer saved as a local policy directory."""
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer, seed, context).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_classifier(path: Path, seed: int = 0) -> Path:
    """A tiny Llama sentiment classifier (labels NEGATIVE, POSITIVE) + tokenizer, saved as a
    local reward-model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

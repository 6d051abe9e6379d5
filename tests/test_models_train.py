"""Models, assistant-only labels, and one real training + generation round on tiny."""

import pytest

from sftmix.data.example import Example
from sftmix.models import load_model, load_tokenizer, stop_token_ids
from sftmix.train.tokenize import IGNORE, encode

CONV = Example([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5.\n#### 5"},
    {"role": "user", "content": "And 4 + 4?"},
    {"role": "assistant", "content": "4 + 4 = 8.\n#### 8"},
])


def trained_text(tok, ex, max_length=512):
    enc = encode(tok, ex, max_length)
    ids = [i for i, lbl in zip(enc["input_ids"], enc["labels"]) if lbl != IGNORE]
    return tok.decode(ids), enc


@pytest.mark.parametrize("template", ["auto", "chatml", "vicuna", "alpaca"])
def test_labels_cover_exactly_the_assistant_turns(template):
    tok = load_tokenizer("tiny", template)
    text, enc = trained_text(tok, CONV)
    assert "2 + 3 = 5.\n#### 5" in text and "4 + 4 = 8.\n#### 8" in text
    assert "What is" not in text and "Be brief" not in text and "And 4" not in text
    assert len(enc["input_ids"]) == len(enc["labels"])
    # the model must learn to stop: the end-of-turn token is trained on
    assert stop_token_ids(tok)[0] in [t for t, lbl in zip(enc["input_ids"], enc["labels"]) if lbl != IGNORE] or \
        tok.eos_token_id in enc["labels"]


def test_truncation_keeps_lengths_aligned():
    tok = load_tokenizer("tiny")
    enc = encode(tok, CONV, max_length=20)
    assert len(enc["input_ids"]) == len(enc["labels"]) == 20


def test_tiny_is_a_cached_llama_with_a_small_vocab():
    model = load_model("tiny", device="cpu")
    assert model.config.model_type == "llama" and model.config.vocab_size <= 2100
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 3e6
    tok = load_tokenizer("tiny")
    assert tok.decode(tok("#### 42")["input_ids"]) == "#### 42"


def test_tiny_learns_a_format_from_sft(tmp_path):
    """Real training and real generation: after SFT on a fixed reply the tiny model produces it."""
    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.evaluate.generate import generate
    from sftmix.train.trainer import StageJob, train_stage

    rows = [Example([{"role": "user", "content": f"say ok {i}"}, {"role": "assistant", "content": "ok, done"}]) for i in range(32)]
    m = ModelConfig(name="tiny", finetune="full")
    info = train_stage(StageJob("s1", m, rows, TrainingConfig(epochs=20, learning_rate=3e-3, batch_size=8), 0, None,
                                str(tmp_path / "s1")), progress=False)
    assert info["loss_last"] < 0.2 * info["loss_first"]
    model = load_model("tiny", weights=tmp_path / "s1" / "model", device="cpu")
    out = generate(model, load_tokenizer("tiny"), [[{"role": "user", "content": "say ok 99"}]], 8, progress=False)
    assert out == ["ok, done"]


def test_lora_stage_saves_an_adapter_and_continues_from_parent(tmp_path):
    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.train.trainer import StageJob, train_stage

    rows = [Example([{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": "yes"}]) for i in range(8)]
    m = ModelConfig(name="tiny", finetune="lora", lora={"r": 4, "alpha": 8})
    hp = TrainingConfig(epochs=1, learning_rate=1e-3, batch_size=4)
    train_stage(StageJob("a", m, rows, hp, 0, None, str(tmp_path / "a")), progress=False)
    assert (tmp_path / "a" / "adapter" / "adapter_config.json").exists()
    info = train_stage(StageJob("b", m, rows, hp, 0, str(tmp_path / "a"), str(tmp_path / "b")), progress=False)
    assert info["steps"] == 2 and (tmp_path / "b" / "adapter").exists()


@pytest.mark.slow
def test_smollm2_loads_from_the_gguf_and_generates():
    tok = load_tokenizer("smollm2-135m-instruct")
    model = load_model("smollm2-135m-instruct", device="cpu")
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    assert getattr(model, "hf_quantizer", None) is None
    from sftmix.evaluate.generate import generate

    (out,) = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], 16, progress=False)
    assert "Paris" in out
    # the assistant mask works with SmolLM2's own template (which adds a default system prompt)
    text, _ = trained_text(tok, CONV)
    assert "#### 5" in text and "What is" not in text and "SmolLM" not in text

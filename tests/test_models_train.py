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
    # the model must learn to stop: each assistant turn ends with a trained end-of-turn token (every template here
    # closes an assistant turn with eos, which is <|im_end|> for tiny)
    assert tok.eos_token_id in stop_token_ids(tok)
    trained = [t for t, lbl in zip(enc["input_ids"], enc["labels"]) if lbl != IGNORE]
    assert trained.count(tok.eos_token_id) == 2
    assert enc["input_ids"].count(tok.eos_token_id) - trained.count(tok.eos_token_id) == (3 if template in ("auto", "chatml") else 0)


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
    from sftmix.evaluate.settings import GenSettings

    out = generate(model, load_tokenizer("tiny"), [[{"role": "user", "content": "say ok 99"}]], GenSettings(8),
                   progress=False)
    assert out == [["ok, done"]]


def _rows(n, reply="yes"):
    return [Example([{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": reply}]) for i in range(n)]


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_child_stage_starts_from_the_parents_weights(tmp_path, finetune):
    import torch

    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.train.trainer import StageJob, train_stage

    m = ModelConfig(name="tiny", finetune=finetune, lora={"r": 4, "alpha": 8})
    lr = 3e-3 if finetune == "full" else 5e-2
    a = train_stage(StageJob("a", m, _rows(16), TrainingConfig(epochs=8, learning_rate=lr, batch_size=4), 0, None,
                             str(tmp_path / "a")), progress=False)
    assert a["loss_last"] < 0.85 * a["loss_first"]
    # a child that barely moves (one step at lr 1e-9) must hold the parent's weights, and start at its low loss
    hp = TrainingConfig(max_steps=1, learning_rate=1e-9, batch_size=4, warmup_ratio=0)
    b = train_stage(StageJob("b", m, _rows(16), hp, 0, str(tmp_path / "a"), str(tmp_path / "b")), progress=False)
    assert b["steps"] == 1 and b["loss_first"] < 0.85 * a["loss_first"]
    f = "adapter/adapter_model.safetensors" if finetune == "lora" else "model/model.safetensors"
    pa, pb = _tensors(tmp_path / "a" / f), _tensors(tmp_path / "b" / f)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.allclose(pa[k], pb[k], atol=1e-6), k
    if finetune == "lora":  # and those weights are trained ones, not a fresh adapter (LoRA's B starts at zero)
        assert any(float(v.abs().max()) > 1e-3 for k, v in pa.items() if "lora_B" in k)
    else:
        base = load_model("tiny", "float32", "cpu").state_dict()
        assert any(not torch.allclose(pa[k], base[k]) for k in pa if k in base)


def test_truncation_policy_is_explicit_and_counted(tmp_path):
    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.train.tokenize import prepare
    from sftmix.train.trainer import StageJob, train_stage

    tok = load_tokenizer("tiny")
    short = _rows(6, "ok")
    long_prompt = [Example([{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "ok"}])]
    long_answer = [Example([{"role": "user", "content": "count"}, {"role": "assistant", "content": "1 2 3 4 " * 20}])]
    rows = short + long_prompt + long_answer * 2
    n_answer = len(encode(tok, long_answer[0])["input_ids"])
    kept, c = prepare(tok, rows, 40, "keep")
    assert (len(kept), c["rows_dropped_prompt_too_long"], c["rows_truncated"], c["tokens_cut"]) == (8, 1, 2, 2 * (n_answer - 40))
    assert all(len(x["input_ids"]) <= 40 for x in kept)
    dropped, c = prepare(tok, rows, 40, "drop")
    assert len(dropped) == 6 and c["rows_dropped"] == 3 and c["rows_truncated"] == 2
    m = ModelConfig(name="tiny", finetune="full")
    info = train_stage(StageJob("t", m, rows, TrainingConfig(max_steps=1, max_length=40, batch_size=4), 0, None,
                                str(tmp_path / "t")), progress=False)
    assert info["examples"] == 6 and info["rows_dropped_prompt_too_long"] == 1 and info["rows_truncated"] == 2
    assert info["tokens_cut"] == 2 * (n_answer - 40) and info["truncation"] == "drop"
    from sftmix.errors import SftmixError

    with pytest.raises(SftmixError, match="max_length=40"):
        train_stage(StageJob("u", m, long_prompt, TrainingConfig(max_length=40), 0, None, str(tmp_path / "u")), progress=False)


def test_stage_info_and_a_finished_stage_is_never_replaced(tmp_path):
    import json

    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.train.trainer import DEFAULT_LR, StageJob, stage_done, train_stage

    m = ModelConfig(name="tiny", finetune="lora", lora={"r": 4, "alpha": 8})
    job = StageJob("s", m, _rows(8), TrainingConfig(epochs=1, batch_size=4), 0, None, str(tmp_path / "s"))
    info = train_stage(job, progress=False)
    for k in ("stage_id", "steps", "examples", "train_tokens", "seconds", "tokens_per_second", "loss_first", "loss_last",
              "loss", "device", "tokens_processed", "padding_efficiency", "peak_memory_mb", "rows_dropped_prompt_too_long",
              "rows_truncated", "tokens_cut", "learning_rate", "world_size", "packing"):
        assert k in info, k
    assert info["learning_rate"] == DEFAULT_LR["lora"] == 2e-4 and len(info["loss"]) == info["steps"] == 2
    assert info["peak_memory_mb"] > 50 and 0 < info["padding_efficiency"] <= 1
    assert stage_done(tmp_path / "s") == info
    # a finished stage (another process's, say) stands: it is returned, not retrained or replaced
    marker = dict(info, note="theirs")
    (tmp_path / "s" / "stage.json").write_text(json.dumps(marker))
    assert train_stage(job, progress=False) == marker
    # a directory without stage.json is an unfinished attempt: replaced
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "junk").write_text("half written")
    info = train_stage(StageJob("x", m, _rows(8), TrainingConfig(max_steps=1, batch_size=4), 0, None, str(tmp_path / "x")),
                       progress=False)
    assert stage_done(tmp_path / "x") == info and not (tmp_path / "x" / "junk").exists()


def test_qlora_without_bitsandbytes_or_gpu_is_a_clear_error(tmp_path):
    import torch

    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.errors import SftmixError
    from sftmix.train.trainer import StageJob, train_stage

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: qlora may really run here")
    m = ModelConfig(name="tiny", finetune="qlora")
    with pytest.raises(SftmixError, match="qlora needs"):
        train_stage(StageJob("q", m, _rows(4), TrainingConfig(max_steps=1), 0, None, str(tmp_path / "q")), progress=False)


@pytest.mark.slow
def test_smollm2_loads_from_the_gguf_and_generates():
    tok = load_tokenizer("smollm2-135m-instruct")
    model = load_model("smollm2-135m-instruct", device="cpu")
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    assert getattr(model, "hf_quantizer", None) is None
    from sftmix.evaluate.generate import generate

    from sftmix.evaluate.settings import GenSettings

    ((out,),) = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], GenSettings(16),
                         progress=False)
    assert "Paris" in out
    # the assistant mask works with SmolLM2's own template (which adds a default system prompt)
    text, _ = trained_text(tok, CONV)
    assert "#### 5" in text and "What is" not in text and "SmolLM" not in text


def test_gradient_checkpointing_and_accumulation_change_nothing_but_memory(tmp_path):
    """Recomputing activations (with packed rows) and splitting a batch into accumulated halves train the same."""
    import torch

    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.train.trainer import StageJob, train_stage

    m = ModelConfig(name="tiny", finetune="full")
    rows = [Example([{"role": "user", "content": f"add {i} and {i}"}, {"role": "assistant", "content": f"{2 * i}"}])
            for i in range(16)]
    runs = {
        "plain": dict(batch_size=8),
        "checkpointed": dict(batch_size=8, gradient_checkpointing=True),
        # batches of 4 are not the 8-batches split in two, so compare the loss of the first step only loosely
        "accumulated": dict(batch_size=4, grad_accum=2),
    }
    out = {}
    for name, kw in runs.items():
        hp = TrainingConfig(max_steps=2, learning_rate=3e-3, warmup_ratio=0, **kw)
        out[name] = train_stage(StageJob(name, m, rows, hp, 0, None, str(tmp_path / name)), progress=False)
    assert out["checkpointed"]["loss"] == pytest.approx(out["plain"]["loss"], rel=1e-5)
    assert out["accumulated"]["steps"] == 2 and out["accumulated"]["train_tokens"] == out["plain"]["train_tokens"]
    assert out["accumulated"]["loss"][0] == pytest.approx(out["plain"]["loss"][0], rel=0.05)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "plain" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "checkpointed" / "model" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

"""Packed rows: same losses and gradients as padded batches, and no attention or label across examples."""

import pytest
import torch

from sftmix.data.example import Example
from sftmix.models import load_model, load_tokenizer
from sftmix.train import packing
from sftmix.train.tokenize import IGNORE, encode
from sftmix.train.trainer import _token_loss


def _examples():
    return [
        Example([{"role": "user", "content": f"What is {i} + {i * 3}?" + " Be brief." * (i % 4)},
                 {"role": "assistant", "content": f"{i} + {i * 3} = {i * 4}.\n#### {i * 4}" + " ok" * i}])
        for i in range(1, 7)
    ]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tok = load_tokenizer("tiny")
    return load_model("tiny", "float32", "cpu"), tok


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = _token_loss(model, dict(batch), keep_ok=True)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _packed(rows):
    return packing.pack(rows)


def test_pack_layout_resets_positions_and_never_predicts_across_examples(tiny):
    _, tok = tiny
    rows = [encode(tok, e) for e in _examples()[:3]]
    b = packing.pack(rows)
    lens = [len(r["input_ids"]) for r in rows]
    assert b["input_ids"].shape == (1, sum(lens))
    assert b["cu_seq_lens_q"].tolist() == [0, lens[0], lens[0] + lens[1], sum(lens)]
    pos = b["position_ids"][0].tolist()
    assert [pos[c] for c in b["cu_seq_lens_q"][:-1].tolist()] == [0, 0, 0] and pos[lens[0] - 1] == lens[0] - 1
    t = b["targets"][0].tolist()
    for end in b["cu_seq_lens_q"][1:].tolist():  # the last token of each example predicts nothing
        assert t[end - 1] == IGNORE
    # every target is the next token of the same example, and only on assistant tokens
    flat_ids = b["input_ids"][0].tolist()
    flat_labels = [lbl for r in rows for lbl in r["labels"]]
    for i, y in enumerate(t):
        if y != IGNORE:
            assert y == flat_ids[i + 1] and flat_labels[i + 1] != IGNORE


def test_packed_and_padded_losses_and_gradients_agree(tiny):
    model, tok = tiny
    rows = [encode(tok, e) for e in _examples()]
    padded_loss, padded_grads = _loss_and_grads(model, packing.pad(rows, tok.pad_token_id))
    base = model.config._attn_implementation
    packing.register()
    model.set_attn_implementation(packing.VARLEN)
    try:
        packed_loss, packed_grads = _loss_and_grads(model, _packed(rows))
    finally:
        model.set_attn_implementation(base)
    # one example at a time, unpadded: the reference both layouts must reproduce
    alone = sum(_token_loss(model, dict(packing.pad([r], tok.pad_token_id)), keep_ok=False).item() for r in rows)
    assert abs(packed_loss - padded_loss) <= 1e-4 * padded_loss
    assert abs(packed_loss - alone) <= 1e-4 * alone
    for n, g in padded_grads.items():
        assert torch.allclose(packed_grads[n], g, rtol=1e-3, atol=1e-6), n


def test_no_attention_across_examples(tiny):
    """Changing the first example must not change a single logit of the second in the packed row."""
    model, tok = tiny
    a, b, c = (encode(tok, e) for e in _examples()[:3])
    packing.register()
    base = model.config._attn_implementation
    model.set_attn_implementation(packing.VARLEN)
    try:
        with torch.no_grad():
            x = _packed([a, b])
            y = _packed([c, b])
            lx = model(**{k: v for k, v in x.items() if k != "targets"}).logits[0, len(a["input_ids"]):]
            ly = model(**{k: v for k, v in y.items() if k != "targets"}).logits[0, len(c["input_ids"]):]
    finally:
        model.set_attn_implementation(base)
    assert torch.allclose(lx, ly, atol=1e-5)


def test_stage_with_packing_matches_padding_and_wastes_nothing(tmp_path):
    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.train.trainer import StageJob, train_stage

    m = ModelConfig(name="tiny", finetune="full")
    out = {}
    for pk in (True, False):
        # one batch of all rows: packed runs draw unsorted batches, padded ones length-sorted, so only a batch that
        # holds everything is the same batch in both
        hp = TrainingConfig(epochs=3, learning_rate=3e-3, batch_size=12, packing=pk, max_length=64)
        out[pk] = train_stage(StageJob("p", m, _examples() * 2, hp, 0, None, str(tmp_path / str(pk))), progress=False)
    on, off = out[True], out[False]
    assert on["packing"] and on["attention"] == packing.VARLEN and not off["packing"]
    assert on["padding_efficiency"] == 1.0 and off["padding_efficiency"] < 1.0
    assert on["train_tokens"] == off["train_tokens"] and on["tokens_processed"] < off["tokens_processed"]
    assert len(on["loss"]) == len(off["loss"]) == 3 and on["loss"][2] < on["loss"][0]
    for x, y in zip(on["loss"], off["loss"]):
        assert abs(x - y) <= 1e-3 * y
    # the saved config names transformers' own attention, not the one sftmix registers while training
    import json

    cfg = json.loads((tmp_path / "True" / "model" / "config.json").read_text())
    assert packing.VARLEN not in json.dumps(cfg)

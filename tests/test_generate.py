"""The generation engine against HF generate, on the tiny model.

The tiny model's weights are redrawn larger (seeded) so that its greedy output depends sharply on every attention
score and position: a wrong mask, position id or cache row shows up as different tokens, not as a near-tie.
"""

import pytest
import torch

from sftmix.errors import SftmixError
from sftmix.evaluate.engine import Engine
from sftmix.evaluate.generate import Endpoint, chat_ids, cut_at_stop, generate, generate_hf, generate_many
from sftmix.evaluate.settings import GenSettings
from sftmix.models import load_model, load_tokenizer

WORDS = "the a math code list sum of two numbers write python function answer is dogs cats json".split()


def chaotic(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    return model.eval()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def model():
    # One thread: the tiny model's matrices are too small to split, and split work stalls on a busy machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield chaotic(load_model("tiny", device="cpu"))
    torch.set_num_threads(old)


def convs(k, seed=0, system=None):
    """k conversations of very different lengths; with `system`, all share a system turn (a common prefix)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(k):
        n = 1 + int(torch.randint(0, 40, (1,), generator=g))
        text = " ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g))
        c = [{"role": "user", "content": f"{i}: {text}"}]
        if system or i % 3 == 0:
            c.insert(0, {"role": "system", "content": system or "Be brief."})
        out.append(c)
    return out


def hf_ids(model, tok, prompts, max_new, stop_ids):
    """HF generate on all prompts in one left-padded batch: the reference token ids (stop token dropped)."""
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             eos_token_id=stop_ids, pad_token_id=tok.pad_token_id, temperature=None, top_p=None,
                             top_k=None)
    res = []
    for row in out[:, width:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stop_ids), len(row))
        res.append(row[:cut])
    return res


def test_engine_matches_hf_greedy_token_for_token(model, tok):
    prompts = chat_ids(tok, convs(14, system="You answer in a few words, then stop."))
    assert len(set(map(len, prompts))) > 8  # mixed lengths
    # One token in 19 ends a sequence, so rows finish at many different steps and free their slots.
    stop = [tok.eos_token_id] + list(range(5, len(tok), 19))
    ref = hf_ids(model, tok, prompts, 32, stop)
    lengths = {len(r) for r in ref}
    assert len(lengths) > 5 and 32 in lengths  # rows really finish at different steps
    for slots in (3, 5, 16):  # refills, swaps, and everything at once
        got, stats = Engine(model, stop, slots=slots, pad_id=tok.pad_token_id).run(prompts, 32)
        assert [g[0] for g in got] == ref, f"slots={slots}"
        # no wasted rows: each sequence's first token comes from its prefill, every other from one decode row
        assert stats.decode_rows == stats.generated_tokens - stats.sequences
        assert stats.generated_tokens == sum(len(r) + (len(r) < 32) for r in ref)
    assert stats.shared_prefix_tokens > 0


def test_generate_matches_generate_hf_and_keeps_order(model, tok):
    cs = convs(9, seed=3)
    s = GenSettings(max_new_tokens=16)
    a = generate(model, tok, cs, s, batch_size=4, progress=False)
    b = generate_hf(model, tok, cs, s, batch_size=4, progress=False)
    assert a == b and all(len(x) == 1 for x in a)
    assert len({x[0] for x in a}) > 5
    perm = [4, 0, 8, 2, 6, 1, 7, 3, 5]
    assert generate(model, tok, [cs[i] for i in perm], s, batch_size=3, progress=False) == [a[i] for i in perm]


def test_lora_wrapped_model_matches_hf(tok):
    from peft import LoraConfig, get_peft_model

    base = chaotic(load_model("tiny", device="cpu"), seed=1)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.eval()
    cs = convs(6, seed=5)
    s = GenSettings(max_new_tokens=12)
    assert generate(peft, tok, cs, s, batch_size=2, progress=False) == generate_hf(peft, tok, cs, s, progress=False)
    with peft.disable_adapter():  # the adapter really changes the output, so equality above is not vacuous
        plain = generate_hf(peft, tok, cs, s, progress=False)
    assert plain != generate(peft, tok, cs, s, progress=False)


def test_eager_attention_matches_hf(tok):
    from transformers import AutoModelForCausalLM

    from sftmix.models import model_path

    m = chaotic(AutoModelForCausalLM.from_pretrained(model_path("tiny"), attn_implementation="eager"), seed=2)
    cs = convs(5, seed=7)
    s = GenSettings(max_new_tokens=10)
    assert generate(m, tok, cs, s, batch_size=2, progress=False) == generate_hf(m, tok, cs, s, progress=False)


def test_stop_strings_cut_and_end_generation_early(model, tok):
    cs = convs(6, seed=11)
    free = generate(model, tok, cs, GenSettings(max_new_tokens=30), progress=False)
    # a stop string taken from the middle of the first completion
    text = free[0][0]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip() and stop in text
    s = GenSettings(max_new_tokens=30, stop=(stop,))
    stats, hf_stats = {}, {}
    cut = generate(model, tok, cs, s, progress=False, stats=stats)
    assert cut == generate_hf(model, tok, cs, s, progress=False, stats=hf_stats)
    assert cut[0][0] == text[: text.index(stop)].strip()
    assert all(stop not in c[0] for c in cut)
    assert stats["generated_tokens"] < hf_stats["generated_tokens"]  # the engine stopped, HF ran on


def test_tasks_generated_together_equal_each_task_alone(model, tok):
    """Three greedy "tasks" with their own max_new_tokens and stop strings share one engine run; a sampled one runs
    on its own. Every result equals its task generated alone (and HF's), and the shared run keeps rows busy."""
    free = generate(model, tok, convs(5, seed=21), GenSettings(max_new_tokens=24), progress=False)
    text = free[0][0]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip()
    jobs = [(convs(7, seed=20), GenSettings(max_new_tokens=6)),
            (convs(5, seed=21), GenSettings(max_new_tokens=24, stop=(stop,))),
            (convs(4, seed=22, system="Be brief."), GenSettings(max_new_tokens=40)),
            (convs(3, seed=23), GenSettings(max_new_tokens=8, n=2, do_sample=True, temperature=1.0, seed=5))]
    stats: dict = {}
    together = generate_many(model, tok, jobs, batch_size=6, progress=False, stats=stats)
    alone = [generate(model, tok, c, s, batch_size=6, progress=False) for c, s in jobs]
    assert together == alone
    assert together[1][0][0] == text[: text.index(stop)].strip()
    for (c, s), got in zip(jobs[:3], together[:3]):
        assert got == generate_hf(model, tok, c, s, batch_size=6, progress=False)
    assert stats["sequences"] == 16 and stats["decode_rows"] == stats["generated_tokens"] - stats["sequences"]


def test_one_tasks_stop_string_does_not_end_anothers_sequences(model, tok):
    a = convs(4, seed=31)
    free = generate(model, tok, a, GenSettings(max_new_tokens=24), progress=False)
    stop = free[0][0][len(free[0][0]) // 2 :][:3]
    assert stop.strip()
    got = generate_many(model, tok, [(a, GenSettings(max_new_tokens=24)),
                                     (convs(3, seed=32), GenSettings(max_new_tokens=24, stop=(stop,)))],
                        batch_size=8, progress=False)
    assert got[0] == free and stop in got[0][0][0]


def test_slots_are_lowered_to_fit_the_cache_budget(model, tok):
    prompts = chat_ids(tok, convs(6, seed=41))
    stop = [tok.eos_token_id]
    full, _ = Engine(model, stop, slots=6, pad_id=tok.pad_token_id).run(prompts, 12)
    small = Engine(model, stop, slots=6, pad_id=tok.pad_token_id, max_cache_bytes=1)
    got, stats = small.run(prompts, 12)
    assert small.slots == 1 and got == full
    assert stats.decode_steps == stats.decode_rows  # one row per step


def test_cut_at_stop_takes_the_stop_that_completes_first():
    assert cut_at_stop("xabcd", ("bcd", "c")) == "xab"  # "c" completes before "bcd" does
    assert cut_at_stop("answer\n\nQuestion: more", ("\n\nQuestion:", "\n\n")) == "answer"
    assert cut_at_stop("no stops here", ("###",)) == "no stops here"
    assert cut_at_stop("a###b###", ("###",)) == "a"


def test_sampling_is_seeded_repeatable_and_batch_independent(model, tok):
    cs = convs(4, seed=13)
    s = GenSettings(max_new_tokens=12, do_sample=True, temperature=1.0, top_p=0.9, n=3, seed=7)
    a = generate(model, tok, cs, s, batch_size=4, progress=False)
    assert [len(x) for x in a] == [3, 3, 3, 3]
    assert a == generate(model, tok, cs, s, batch_size=4, progress=False)
    assert a == generate(model, tok, cs, s, batch_size=11, progress=False)  # one generator per sample
    other = generate(model, tok, cs, GenSettings(**{**s.__dict__, "seed": 8}), batch_size=4, progress=False)
    assert other != a
    assert any(len(set(x)) > 1 for x in a)  # the n samples of a prompt differ
    greedy = generate(model, tok, cs, GenSettings(max_new_tokens=12), progress=False)
    assert [x[0] for x in a] != [g[0] for g in greedy]


def test_hf_backend_sampling_is_seeded(model, tok):
    cs = convs(3, seed=17)
    s = GenSettings(max_new_tokens=8, do_sample=True, n=2, seed=3)
    a = generate(model, tok, cs, s, backend="hf", progress=False)
    assert a == generate(model, tok, cs, s, backend="hf", progress=False) and [len(x) for x in a] == [2, 2, 2]


def test_empty_input_and_bad_arguments(model, tok):
    assert generate(model, tok, [], GenSettings()) == []
    assert generate_hf(model, tok, [], GenSettings()) == []
    with pytest.raises(SftmixError, match="unknown generation backend"):
        generate(model, tok, convs(1), GenSettings(), backend="nope")
    with pytest.raises(TypeError, match="GenSettings"):
        generate(model, tok, convs(1), 16)


def test_openai_backend_reports_an_unreachable_endpoint(monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.setenv("SFTMIX_TEST_KEY", "sk-secret-value")
    ep = Endpoint("http://127.0.0.1:9/v1", "m", api_key_env="SFTMIX_TEST_KEY", max_retries=0, timeout=2)
    with pytest.raises(SftmixError, match="unreachable") as e:
        generate(ep, None, convs(2), GenSettings(max_new_tokens=4), progress=False)
    assert "sk-secret-value" not in str(e.value)


def test_openai_backend_against_a_local_server(monkeypatch):
    """A stdlib stand-in for an OpenAI-compatible server: order, n choices (returned out of order), stop strings,
    the key sent from the named variable, and a refused key reported without the key."""
    pytest.importorskip("openai")
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers.get("Authorization"), body))
            if self.headers.get("Authorization") != "Bearer sk-good":
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "bad key", "type": "auth"}}')
                return
            user = body["messages"][-1]["content"]
            choices = [{"index": i, "message": {"role": "assistant", "content": f" re {user} #{i} STOP more "},
                        "finish_reason": "stop"} for i in range(body.get("n", 1))]
            out = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": choices[::-1]}
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(out).encode())

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ep = Endpoint(f"http://127.0.0.1:{server.server_port}/v1", "m", api_key_env="SFTMIX_TEST_KEY", concurrency=3)
        monkeypatch.setenv("SFTMIX_TEST_KEY", "sk-good")
        cs = [[{"role": "user", "content": f"q{i}"}] for i in range(7)]
        out = generate(ep, None, cs, GenSettings(max_new_tokens=5, stop=("STOP",)), progress=False)
        assert out == [[f"re q{i} #0"] for i in range(7)]
        out = generate(ep, None, cs[:2], GenSettings(max_new_tokens=5, do_sample=True, n=2, seed=3), progress=False)
        assert out == [[f"re q{i} #0 STOP more", f"re q{i} #1 STOP more"] for i in range(2)]
        assert seen[-1][1]["n"] == 2 and seen[-1][1]["seed"] == 3 and seen[-1][1]["max_tokens"] == 5
        monkeypatch.setenv("SFTMIX_TEST_KEY", "sk-bad-secret")
        with pytest.raises(SftmixError, match="SFTMIX_TEST_KEY") as e:
            generate(ep, None, cs[:1], GenSettings(), progress=False)
        assert "sk-bad-secret" not in str(e.value)
    finally:
        server.shutdown()


def test_vllm_backend_is_guarded(model, tok):
    from sftmix.evaluate.backends import have_vllm

    if have_vllm():
        pytest.skip("vLLM is installed here")
    with pytest.raises(SftmixError, match="vLLM"):
        generate(model, tok, convs(1), GenSettings(), backend="vllm")


# ----------------------------------------------------------------------------------- the engine's decode kernels


def test_decode_attention_equals_attention_over_each_rows_own_columns():
    from sftmix.evaluate import fastpath as E

    g = torch.Generator().manual_seed(0)
    rows, heads, kv, dim, width = 7, 6, 2, 16, 40
    starts = [0, 0, 3, 12, 12, 25, 30]  # each row's first own column (the batch's window starts at 0)
    q = torch.randn((rows, heads, 1, dim), generator=g)
    k = torch.randn((rows, kv, width, dim), generator=g)
    v = torch.randn((rows, kv, width, dim), generator=g)
    valid = torch.zeros((rows, width), dtype=torch.bool)
    for r, s in enumerate(starts):
        valid[r, s:] = torch.rand(width - s, generator=g) > 0.3
        valid[r, -1] = True
    additive = torch.zeros((rows, 1, 1, width)).masked_fill_(~valid[:, None, None], torch.finfo(torch.float32).min)
    want = torch.empty((rows, 1, heads, dim))
    for r in range(rows):  # plain attention of each query head over its key/value head's valid columns
        cols = valid[r].nonzero().flatten()
        for h in range(heads):
            kk, vv = k[r, h // (heads // kv), cols], v[r, h // (heads // kv), cols]
            w = torch.softmax(q[r, h, 0] @ kk.T * dim**-0.5, -1)
            want[r, 0, h] = w @ vv
    runs = E.attention_runs(starts, penalty=0)
    assert len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == rows
    for kwargs in ({}, {"sftmix_runs": runs}):
        got, _ = E._decode_attention(None, q, k, v, additive, scaling=dim**-0.5, **kwargs)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_attention_runs_is_the_best_cut():
    import itertools
    import random

    from sftmix.evaluate.fastpath import attention_runs

    def skipped(starts, cuts):
        bounds = [0, *cuts, len(starts)]
        return sum((b - a) * (min(starts[a:b]) - min(starts)) for a, b in zip(bounds, bounds[1:]))

    rnd = random.Random(0)
    for _ in range(200):
        n = rnd.randint(1, 8)
        starts = [rnd.choice([0, 5, 9, 30, 31, 60]) for _ in range(n)]
        penalty, most = rnd.choice([0, 10, 40]), rnd.randint(1, 4)
        runs = attention_runs(starts, most=most, penalty=penalty)
        assert runs[0][0] == 0 and runs[-1][1] == n and all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        assert all(c0 == min(starts[a:b]) - min(starts) for a, b, c0 in runs)
        got = skipped(starts, [a for a, _, _ in runs[1:]]) - penalty * (len(runs) - 1)
        best = max(skipped(starts, list(c)) - penalty * len(c)
                   for k in range(most) for c in itertools.combinations(range(1, n), k))
        assert len(runs) <= most and got == best, (starts, penalty, most, runs)


@pytest.fixture(params=["fused", "own forward"])
def path(request, monkeypatch):
    """The engine's two ways of running a model: a FusedDecoder (Llama-architecture models on a CPU, the tiny model
    among them), or the model's own forward with the engine's decode attention and prepacked weights."""
    from sftmix.evaluate import fastpath

    if request.param == "own forward":
        monkeypatch.setattr(fastpath, "fused_decoder", lambda model: None)
    return request.param


def test_engine_with_attention_runs_matches_hf(model, tok, monkeypatch, path):
    from sftmix.evaluate import fastpath

    seen = []
    real = fastpath.decode_attention

    def spy(*a):
        seen.append(len(a[5] or ()) if len(a) > 5 else 0)
        return real(*a)

    monkeypatch.setattr(fastpath, "RUN_PENALTY", 0)  # split the rows whenever that skips a column
    monkeypatch.setattr(fastpath, "decode_attention", spy)
    prompts = chat_ids(tok, convs(12, seed=11))
    stop = [tok.eos_token_id] + list(range(7, len(tok), 23))
    ref = hf_ids(model, tok, prompts, 24, stop)
    for slots in (4, 12):
        got, _ = Engine(model, stop, slots=slots, pad_id=tok.pad_token_id).run(prompts, 24)
        assert [x[0] for x in got] == ref, f"slots={slots}"
    assert max(seen) > 1  # rows really attended in several runs


def test_engine_leaves_the_model_as_it_found_it(model, tok, path):
    from sftmix.evaluate import fastpath

    prompts = chat_ids(tok, convs(4, seed=2))
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    weights = [m.weight.clone() for m in linears]

    def boom(ids):
        own = path == "own forward"
        # the model's own forward runs with the engine's attention and prepacked weights swapped in; fused, the
        # model itself is not touched
        assert (model.config._attn_implementation == fastpath.DECODE_ATTENTION) == own
        assert all(("forward" in m.__dict__) == own for m in linears)
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        Engine(model, [tok.eos_token_id], slots=2).run(prompts, 8, stop_check=boom)
    assert model.config._attn_implementation == "sdpa"
    assert not any("forward" in m.__dict__ for m in linears)
    assert all(torch.equal(m.weight, w) for m, w in zip(linears, weights))
    x = torch.randn(3, linears[0].in_features)
    with fastpath.packed_linears(model):
        packed = linears[0](x)
    torch.testing.assert_close(packed, torch.nn.functional.linear(x, linears[0].weight, linears[0].bias))


def test_sequences_admitted_at_once_fit_the_cache_as_allocated(model, tok, monkeypatch):
    from sftmix.evaluate.engine import SlotCache

    # A long prompt with few new tokens beside short prompts with many: the cache must hold the longest prompt
    # plus the most new tokens, not just the longest single sequence.
    prompts = chat_ids(tok, convs(6, seed=13))
    prompts[0] = prompts[0] + prompts[1] + prompts[2]
    max_new = [2] + [40] * 5
    grew = []
    monkeypatch.setattr(SlotCache, "grow", lambda self, c: grew.append(c))
    monkeypatch.setattr(SlotCache, "shift", lambda self, *a: grew.append(a))
    engine = Engine(model, [], slots=8, pad_id=tok.pad_token_id)
    out, stats = engine.run(prompts, max_new)
    assert grew == [] and [len(o[0]) for o in out] == max_new
    assert engine.pool.capacity == max(map(len, prompts)) + 40 + 1


def _forward_both_ways(model, prompts):
    """The last-position logits of a prefill then one decode step, through the engine's FusedDecoder and through
    the model's own forward (HF modules, with the same prepacked weights and decode attention)."""
    from sftmix.evaluate import fastpath
    from sftmix.evaluate.engine import SlotCache

    from sftmix.evaluate.engine import _cache_arg

    fused = fastpath.fused_decoder(model)
    assert fused is not None
    arg = _cache_arg(model)
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    pos = torch.tensor([[0] * (width - len(p)) + list(range(len(p))) for p in prompts])
    real = ids != 0
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    mask = (causal[None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool)[None]
    step_ids, step_pos = torch.tensor([[5]] * len(prompts)), pos[:, -1:] + 1
    step_mask = torch.zeros((len(prompts), 1, 1, width + 1)).masked_fill_(
        ~torch.cat([real, torch.ones((len(prompts), 1), dtype=torch.bool)], 1)[:, None, None],
        torch.finfo(torch.float32).min)
    out = {}
    with torch.inference_mode():
        for way in ("fused", "own"):
            pool = SlotCache(len(prompts), width + 1)
            pool.window(0, len(prompts), 0, 0)
            if way == "fused":
                first = fused(ids, pos, mask[:, None], pool)
                pool.window(0, len(prompts), width, 0)
                out[way] = first, fused(step_ids, step_pos, step_mask, pool)
                continue
            with fastpath.attention_for_decode(model), fastpath.packed_linears(model):
                first = model(input_ids=ids, position_ids=pos, attention_mask=mask[:, None], logits_to_keep=1,
                              **{arg: pool}).logits[:, -1]
                pool.window(0, len(prompts), width, 0)
                out[way] = first, model(input_ids=step_ids, position_ids=step_pos, attention_mask=step_mask,
                                        logits_to_keep=1, **{arg: pool}).logits[:, -1]
    return out


def _small(kind: str):
    """Small random models of the other shapes the FusedDecoder takes: grouped key/value heads and q/k/v biases
    (qwen2); all four attention biases, untied embeddings and llama3 rope scaling (llama)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=256, attn_implementation="sdpa")
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        import transformers

        rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32}
        if int(transformers.__version__.split(".")[0]) >= 5:  # renamed in transformers 5, theta moved inside
            rope = {"rope_parameters": {**rope, "rope_theta": 10000.0}}
        else:
            rope = {"rope_scaling": rope}
        model = LlamaForCausalLM(LlamaConfig(**common, **rope, attention_bias=True, tie_word_embeddings=False))
    return chaotic(model)


@pytest.mark.parametrize("kind", ["tiny", "qwen2", "llama with biases and llama3 rope"])
def test_fused_decoder_gives_the_models_own_logits(model, tok, kind):
    if kind == "tiny":
        m, prompts = model, chat_ids(tok, convs(5, seed=4))
    else:
        g = torch.Generator().manual_seed(1)
        m = _small("qwen2" if kind == "qwen2" else "llama")
        prompts = [torch.randint(1, 300, (int(n),), generator=g).tolist() for n in (5, 40, 17, 90)]
        assert any(p.bias is not None for p in m.modules() if isinstance(p, torch.nn.Linear))
    out = _forward_both_ways(m, prompts)
    for a, b in zip(out["fused"], out["own"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.abs().max() > 1  # not vacuously equal


def test_fused_decoder_merges_lora_and_declines_what_it_cannot_run(tok):
    from peft import LoraConfig, get_peft_model

    from sftmix.evaluate import fastpath

    base = chaotic(load_model("tiny", device="cpu"), seed=6)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    prompts = chat_ids(tok, convs(4, seed=8))
    out = _forward_both_ways(peft, prompts)
    for a, b in zip(out["fused"], out["own"]):  # merged into the weights, the adapter's effect is the same
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with peft.disable_adapter():
        plain = _forward_both_ways(peft, prompts)["fused"][0]
    assert (plain - out["fused"][0]).abs().max() > 1e-2  # and the adapter is really there
    peft.merge_adapter()  # merged into the base weights, it must not be applied twice ...
    torch.testing.assert_close(_forward_both_ways(peft, prompts)["fused"][0], out["fused"][0], rtol=1e-4, atol=1e-4)
    with peft.disable_adapter():  # ... nor kept when disabled (PEFT unmerges for that call: left to PEFT here)
        assert fastpath.fused_decoder(peft) is None
    dora = get_peft_model(chaotic(load_model("tiny", device="cpu")),
                          LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)).eval()
    assert fastpath.fused_decoder(dora) is None
    assert fastpath.fused_decoder(base.half()) is None  # fp32 only


def test_packing_leaves_a_modules_own_forward_alone(model):
    from sftmix.evaluate import fastpath

    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    hooked = linears[0]
    own = hooked.forward = lambda x: x * 0  # as accelerate's hooks set an instance forward
    try:
        with fastpath.packed_linears(model):
            assert hooked.forward is own and "forward" in linears[1].__dict__
        assert hooked.forward is own and "forward" not in linears[1].__dict__
    finally:
        del hooked.forward

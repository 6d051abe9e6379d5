"""What `sftmix plan` shows: runs, unique stages, training tokens, FLOPs and what shared prefixes save."""

from __future__ import annotations

import math

from ..config import StudyFile
from ..train.tokenize import encode
from .plan import Plan


def param_count(name: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..models import model_path

    cfg = AutoConfig.from_pretrained(model_path(name))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def plan_summary(sf: StudyFile, plan: Plan) -> dict:
    from ..models import load_tokenizer

    hp = sf.study.training
    tokens: dict[str, int] = {}
    params: dict[str, int] = {}
    toks: dict[tuple, object] = {}
    for st in plan.stages.values():
        key = st.model.name
        if key not in params:
            params[key] = param_count(key)
        tk = (key, st.model.chat_template)
        if tk not in toks:
            toks[tk] = load_tokenizer(*tk)
        tok = toks[tk]
        per_epoch = sum(len(encode(tok, e, st.training.max_length)["input_ids"]) for e in st.mixture.examples)
        tokens[st.stage_id] = int(math.ceil(per_epoch * st.training.epochs))
    runs = []
    for r in plan.runs:
        per_source: dict[str, int] = {}
        for st in r.stages:
            for name, info in st.mixture.manifest["sources"].items():
                per_source[name] = per_source.get(name, 0) + info["rows"]
        runs.append({
            "run_id": r.run_id, "label": r.label, "model": r.model.name, "stages": len(r.stages),
            "rows": sum(len(s.mixture) for s in r.stages), "tokens": sum(tokens[s.stage_id] for s in r.stages),
            "rows_per_source": per_source,
        })
    used = sum(x["tokens"] for x in runs)
    unique = sum(tokens.values())
    n_eval = len(sf.study.evaluation.tasks)
    return {
        "runs": runs,
        "totals": {
            "runs": len(plan.runs), "unique_stages": len(plan.stages), "stage_uses": plan.stage_uses,
            "saved_stages": plan.stage_uses - len(plan.stages), "train_tokens": unique, "naive_tokens": used,
            "saved_tokens": used - unique,
            "flops": sum(6 * params[s.model.name] * tokens[sid] for sid, s in plan.stages.items()),
            "evaluations": len(plan.runs) * n_eval,
            # the tasks' real item counts (a file may hold fewer than the limit); the limit when tasks were not built
            "eval_items": sum(len(t.items) for t in plan.tasks) if plan.tasks else (sf.study.evaluation.limit or 0) * n_eval,
            "epochs": hp.epochs,
        },
    }

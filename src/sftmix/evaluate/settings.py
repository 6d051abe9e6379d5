"""How a task wants its completions made. Tasks declare it; every generation backend (sftmix's engine, HF generate,
vLLM, an OpenAI-compatible endpoint) honours it, so a task's scores do not depend on which backend produced them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GenSettings:
    max_new_tokens: int = 256
    do_sample: bool = False  # greedy unless the task asks for samples (pass@k with k > 1, maj@k)
    temperature: float = 0.8
    top_p: float = 0.95
    n: int = 1  # completions per prompt
    stop: tuple[str, ...] = field(default_factory=tuple)  # text stops, cut from the completion
    seed: int = 0  # sampling seed, so sampled evaluations are repeatable

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.n > 1 and not self.do_sample:
            raise ValueError("n > 1 needs do_sample: greedy decoding gives n identical completions")

    def key(self) -> dict:
        """What goes into an evaluation's cache / resume key: everything that changes the completions."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        if not self.do_sample:  # sampling knobs mean nothing under greedy decoding
            for k in ("temperature", "top_p", "seed"):
                d.pop(k)
        return d

"""The unit of data everywhere in sftmix: a chat (list of messages) plus metadata."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    """One conversation. `meta` carries `id`, `source`, `ability` and, for evaluation items, the reference
    (e.g. `answer` for math, `prompt`/`test`/`entry_point` for code, `constraints` for general)."""

    messages: list[dict[str, str]]
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.meta.get("id") or self.content_hash()[:16]

    def content_hash(self) -> str:
        """Hash of the conversation text only, so that the same row from two files hashes the same."""
        blob = json.dumps([[m["role"], m["content"]] for m in self.messages], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """The conversation up to (not including) the last assistant turn: what a model is asked."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages[:-1]
        return list(self.messages)

    @property
    def response(self) -> str:
        return self.messages[-1]["content"] if self.messages and self.messages[-1]["role"] == "assistant" else ""

    def to_dict(self) -> dict:
        return {"messages": self.messages, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "Example":
        return cls(messages=list(d["messages"]), meta=dict(d.get("meta", {})))


def chat(user: str, assistant: str | None = None, system: str | None = None, **meta) -> Example:
    msgs = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user})
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return Example(msgs, dict(meta))


# One wording for code problems, shared by the built-in source, HumanEval-format files and the code task, so that
# what a model is trained on and what it is asked at evaluation look the same.
CODE_USER_TEMPLATE = "Complete the following Python function.\n\n```python\n{prompt}```"
CODE_ASSISTANT_TEMPLATE = "```python\n{prompt}{solution}```"


def code_example(prompt: str, solution: str | None, **meta) -> Example:
    """A HumanEval-shaped problem as a chat; `solution` is the function body (HumanEval's canonical_solution)."""
    user = CODE_USER_TEMPLATE.format(prompt=prompt)
    assistant = None if solution is None else CODE_ASSISTANT_TEMPLATE.format(prompt=prompt, solution=solution)
    return chat(user, assistant, prompt=prompt, **meta)

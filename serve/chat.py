"""Chat messages -> one prompt: the run's template when it was tuned with one, else the turns as text."""

from __future__ import annotations

import tomllib
from pathlib import Path

# A plain language model has no chat format: the turns are written as "Role: text" lines, the reply is
# prompted with "Assistant:", and a new "User:" line ends it.
PLAIN_STOP = "\nUser:"


def run_template(run_dir: Path) -> str | None:
    """The prompt template a fine-tuned run was tuned with (config.toml's [task] template: text with a
    {prompt} field), or None for a plain language model."""
    try:
        with open(Path(run_dir) / "config.toml", "rb") as f:
            template = tomllib.load(f).get("task", {}).get("template")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return template if isinstance(template, str) and "{prompt}" in template else None


def chat_prompt(messages: list[dict[str, str]], template: str | None) -> tuple[str, list[str]]:
    """(prompt, extra stop strings) for validated messages (role system|user|assistant, content text).

    With a template, each user turn goes through it (a system message leads the first one) and the
    assistant turns follow their prompts as they were; without one, the plain "Role: text" format."""
    if template is None:
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(lines + ["Assistant:"]), [PLAIN_STOP]
    parts, system = [], ""
    for m in messages:
        if m["role"] == "system":
            system += m["content"] + "\n"
        elif m["role"] == "user":
            parts.append(template.replace("{prompt}", system + m["content"]))
            system = ""
        else:
            parts.append(m["content"])
    return "".join(parts), []

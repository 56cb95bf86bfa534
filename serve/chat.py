"""Chat messages -> one prompt: the template an instruct run was tuned with (RUN/task.json, rendered by
engine.tasks.instruct exactly as in training and `smallgpt chat`), else the turns as text."""

from __future__ import annotations

from pathlib import Path

from engine.rundir import RunDir, read_task_info
from engine.tasks.instruct import prompt_text

# A plain language model has no chat format: the turns are written as "Role: text" lines, the reply is
# prompted with "Assistant:", and a new "User:" line ends it.
PLAIN_STOP = "\nUser:"


def run_template(run_dir: Path) -> dict[str, str] | None:
    """The prompt template of an instruct run, or None for any other run (a plain or a classify run)."""
    if not RunDir(run_dir).task.is_file():
        return None
    return read_task_info(run_dir).get("template")


def chat_prompt(messages: list[dict[str, str]], template: dict[str, str] | None) -> tuple[str, list[str]]:
    """(prompt, extra stop strings) for validated messages (role system|user|assistant, content text).
    A tuned run's replies end with its end-of-text token, so its template needs no stop string."""
    if template is None:
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(lines + ["Assistant:"]), [PLAIN_STOP]
    return prompt_text(template, messages), []

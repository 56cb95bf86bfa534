"""Chat messages -> prompt: an instruct run's template from its task.json, else the turns as text."""

from __future__ import annotations

import json

from engine.tasks.instruct import TEMPLATES, prompt_text
from serve.chat import PLAIN_STOP, chat_prompt, run_template


def test_an_instruct_run_renders_the_conversation_with_its_template(tmp_path):
    (tmp_path / "config.toml").write_text('[model]\nkind = "gpt"\n')
    (tmp_path / "task.json").write_text(json.dumps({"kind": "instruct", "template": TEMPLATES["chat"]}))
    template = run_template(tmp_path)
    assert template == TEMPLATES["chat"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {x}"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    prompt, stops = chat_prompt(messages, template)
    assert prompt == prompt_text(TEMPLATES["chat"], messages)  # what training and `smallgpt chat` render
    assert prompt == ("### System:\nBe brief.\n\n### User:\nHi {x}\n\n### Assistant:\nHello.<|endoftext|>"
                      "### User:\nBye\n\n### Assistant:\n")
    assert stops == []


def test_a_plain_or_classify_run_gets_the_turns_as_text(tmp_path):
    (tmp_path / "config.toml").write_text('[model]\nkind = "gpt"\n')
    assert run_template(tmp_path) is None
    (tmp_path / "task.json").write_text(json.dumps({"kind": "classify", "labels": ["a", "b"]}))
    assert run_template(tmp_path) is None
    prompt, stops = chat_prompt([{"role": "user", "content": "Hi"}], None)
    assert prompt == "User: Hi\nAssistant:" and stops == [PLAIN_STOP]

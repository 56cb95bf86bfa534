"""Chat messages -> prompt: the run's template when config.toml has one, else the turns as text."""

from __future__ import annotations

from serve.chat import PLAIN_STOP, chat_prompt, run_template

TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def test_a_tuned_run_applies_its_template_to_each_user_turn(tmp_path):
    (tmp_path / "config.toml").write_text(f'[model]\nkind = "gpt"\n\n[task]\ntemplate = """{TEMPLATE}"""\n')
    template = run_template(tmp_path)
    assert template == TEMPLATE
    prompt, stops = chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {x}"},
                                 {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
                                template)
    assert prompt == ("### Instruction:\nBe brief.\nHi {x}\n\n### Response:\nHello."
                      "### Instruction:\nBye\n\n### Response:\n")
    assert stops == []


def test_a_plain_model_gets_the_turns_as_text(tmp_path):
    (tmp_path / "config.toml").write_text('[model]\nkind = "gpt"\n')
    assert run_template(tmp_path) is None
    assert run_template(tmp_path / "missing") is None
    prompt, stops = chat_prompt([{"role": "user", "content": "Hi"}], None)
    assert prompt == "User: Hi\nAssistant:" and stops == [PLAIN_STOP]

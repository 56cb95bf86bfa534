"""The command palette's "Import a model folder": a GPT-2 folder becomes a run the Generate and Inspect
tabs pick by default; a bad folder shows its one sentence in the dialog, which stays open."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from textual.widgets import Input, Static  # noqa: E402

from tests.hf_gpt2 import save_tiny_gpt2  # noqa: E402
from tests.tui.pilot_helpers import notes, settle, wait_for, write_corpus  # noqa: E402
from tui.app import SmallGPTApp  # noqa: E402
from tui.import_screen import ImportScreen  # noqa: E402


async def test_import_a_model_folder_from_the_command_palette(home, monkeypatch):
    monkeypatch.chdir(home)
    folder = save_tiny_gpt2(home / "tiny-gpt2")
    (home / "broken").mkdir()
    app = SmallGPTApp(corpus=write_corpus(home))
    async with app.run_test(size=(80, 24)) as pilot:
        assert "Import a model folder" in [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Import a model folder")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImportScreen) and app.screen.query("#import-src"),
                       what="the import dialog")
        screen = app.screen
        screen.query_one("#import-src", Input).value = str(home / "broken")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "no config.json" in str(screen.query_one("#import-status", Static).render()),
                       what="the error sentence")
        assert app.screen is screen and not (home / "checkpoints" / "broken").exists()

        screen.query_one("#import-src", Input).value = str(folder)
        screen.query_one("#import-name", Input).value = "mini"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, ImportScreen), what="the import")
        await settle(pilot)
        assert app.active_run == str(home / "checkpoints" / "mini")
        assert (home / "checkpoints" / "mini" / "ckpt" / "latest" / "model.safetensors").is_file()
        assert any("Imported mini" in n.message for n in notes(app))

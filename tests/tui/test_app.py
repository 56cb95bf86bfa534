"""The app shell: tab keys, help, command palette, settings, error notifications, small terminals."""

from __future__ import annotations

import logging

import pytest
from textual.widgets import Input, TabbedContent

from engine.errors import CorpusError
from tests.tui.pilot_helpers import settle, write_corpus
from tui.app import SmallGPTApp
from tui.messages import Progress, progress_poster
from tui.screens import HelpScreen
from tui.settings import Settings
from tui.tabs.data import DataTab


@pytest.fixture
def corpus(home, monkeypatch) -> str:
    monkeypatch.chdir(home)
    return write_corpus(home)


async def test_number_keys_switch_tabs_and_escape_leaves_a_field(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        tabs = app.query_one(TabbedContent)
        for key, pane in [("2", "tokenizer"), ("3", "train"), ("4", "generate"), ("5", "inspect"), ("1", "data")]:
            await pilot.press(key)
            assert tabs.active == pane
        app.query_one("#corpus-source", Input).focus()
        await pilot.press("3")  # typed into the field, not a tab switch
        assert tabs.active == "data" and app.query_one("#corpus-source", Input).value == "3"
        await pilot.press("escape", "3")
        assert tabs.active == "train"
        assert app.animation_level == "none"


async def test_help_lists_the_keys_of_the_app_and_of_every_tab(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        sections = dict(app.screen.sections)
        assert {"Everywhere", "Data tab", "Tokenizer tab", "Train tab"} <= set(sections)
        assert ("ctrl+s", "Start") in [(k.lower().replace("^", "ctrl+"), d) for k, d in sections["Train tab"]]
        assert any(d == "Train tokenizer" for _, d in sections["Tokenizer tab"])
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_reaches_tabs_and_tab_actions(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Go to Train", "Train: Start", "Train: Stop", "Data: Encode", "Tokenizer: Train tokenizer",
                "Keys"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Go to Inspect")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "inspect"


async def test_settings_remember_corpus_split_and_theme(corpus, home):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.query_one("#val-ratio", Input).value = "0.2"
        app.theme = "textual-light"
        await pilot.pause()
    saved = Settings.load(home / "settings.toml")
    assert saved.get("data", "corpus") == corpus
    assert saved.get("data", "val_ratio") == 0.2
    assert saved.get("ui", "theme") == "textual-light"
    again = SmallGPTApp()  # no --corpus: the remembered one
    async with again.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert again.corpus == corpus and again.val_ratio == 0.2 and again.theme == "textual-light"
        assert "corpus.txt" in str(again.query_one("#corpus-title").render())


async def test_unreadable_settings_file_is_ignored(home):
    (home / "settings.toml").write_text("this is [not toml")
    assert Settings.load(home / "settings.toml").tables == {}


async def test_engine_error_is_one_notification_and_the_app_keeps_running(corpus, home):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.query_one("#corpus-source", Input).value = "no/such/file.txt"
        app.query_one("#corpus-source", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert len(messages) == 1 and "no/such/file.txt" in messages[0]
        assert "Traceback" not in messages[0]
        assert app.is_running
        assert "Loading failed" in str(app.query_one("#data-status").render())


@pytest.fixture
def app_logging(home):
    """The logging smallgpt-tui's main() sets up (logs/smallgpt.log under the home), taken down after."""
    from tui.cli import setup_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging()
    yield home / "logs" / "smallgpt.log"
    for handler in set(root.handlers) - set(handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


async def test_internal_error_is_a_short_notification_with_the_traceback_in_the_log(corpus, app_logging):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)

        def broken() -> None:
            raise KeyError("bug")

        app.query_one(DataTab).run_engine(broken, name="broken")
        await settle(pilot)
        [note] = [n.message for n in app._notifications]
        assert note == f"Internal error (KeyError), see {app_logging}"
        assert app.is_running
    log = app_logging.read_text()
    assert "Traceback" in log and "in broken" in log and "KeyError: 'bug'" in log


async def test_user_error_keeps_its_sentence_and_markup_is_not_interpreted(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        app.report_error(CorpusError("File [bold]x[/] is empty: give it some text."))
        await pilot.pause()
        assert [n.message for n in app._notifications][-1] == "File [bold]x[/] is empty: give it some text."


async def test_resizing_down_to_40x12_on_every_tab_does_not_crash(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for key in "12345":
            await pilot.press("escape", key)
            for size in [(40, 12), (80, 24)]:
                await pilot.resize_terminal(*size)
                await pilot.pause()
        assert app.is_running


async def test_no_color_is_respected(corpus, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.no_color


def test_progress_is_throttled_but_the_end_always_arrives():
    class Sink:
        def __init__(self) -> None:
            self.got: list[Progress] = []

        def post_message(self, message: Progress) -> bool:
            self.got.append(message)
            return True

    sink = Sink()
    report = progress_poster(sink, "k", max_rate=10)  # type: ignore[arg-type]
    for i in range(10_000):
        report(i / 10_000, "reading")
    report(1.0, "done")
    assert 1 <= len(sink.got) <= 3  # a tight loop lasts well under 0.2 s
    assert sink.got[-1].fraction == 1.0 and sink.got[-1].label == "done"

"""The app shell: tab keys, help, command palette, settings, error notifications, small terminals."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Input, TabbedContent

from engine.errors import CorpusError
from tests.tui.pilot_helpers import notes, screen_svg, settle, wait_for, write_corpus
import tui.messages
from tui.app import TABS, SmallGPTApp
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


async def test_a_run_pickers_blank_row_says_there_are_no_runs_only_while_there_are_none(corpus, home):
    from benchmarks.tiny_run import make_tiny_run
    from textual.widgets import Select
    from tui.widgets.run_picker import NO_RUNS, RunPicker

    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await settle(pilot)
        picker = app.query_one(RunPicker)
        assert picker.run_dir is None and picker.query_one("#run", Select).prompt == NO_RUNS
        make_tiny_run(home)
        picker.refresh_runs()
        await wait_for(pilot, lambda: picker.run_dir is not None, what="the new run")
        assert picker.query_one("#run", Select).prompt != NO_RUNS  # the blank row of a list of runs


async def test_a_run_that_ends_while_generate_is_shown_is_relabelled_there(corpus, home):
    """The picker's "name · status" follows the run: the Train tab's follower sees the trainer's lock go, and
    the Generate tab's picker re-lists while it stays shown (with the step, which a running run's lacks)."""
    from contextlib import ExitStack

    from benchmarks.tiny_run import make_tiny_run
    from engine.runs import hold_lock
    from textual.widgets import Select

    run_dir = make_tiny_run(home)
    app = SmallGPTApp(corpus=corpus)

    def label() -> str:
        select = app.query_one("#gen-run #run", Select)
        return dict((v, str(t)) for t, v in select._options).get(str(run_dir), "")

    with ExitStack() as trainer:
        trainer.enter_context(hold_lock(run_dir))  # as a live trainer holds it
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await wait_for(pilot, lambda: label().endswith("· running"), what="the run listed as running")
            trainer.close()  # the trainer exits
            await wait_for(pilot, lambda: label() and "· running" not in label(), what="the run relabelled")
            assert "· step " in label()


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
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        await pilot.press(*"Go to Inspect")
        hits = app.screen.query_one(CommandList)  # the search runs in the background: wait for its best hit
        await wait_for(pilot, lambda: hits.highlighted is not None
                       and "Go to Inspect" in str(hits.get_option_at_index(hits.highlighted).prompt), what="the hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one(TabbedContent).active == "inspect", what="the Inspect tab")


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
        messages = [n.message for n in notes(app)]
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


async def test_internal_error_is_a_short_notification_with_the_traceback_in_the_log(corpus, app_logging, monkeypatch):
    import engine.corpora

    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)

        def broken(*args, **kwargs) -> None:
            raise KeyError("bug")

        monkeypatch.setattr(engine.corpora, "corpus_stats", broken)  # a bug in the engine
        app.query_one(DataTab).load(corpus)
        await settle(pilot)
        [note] = [n.message for n in notes(app)]
        assert note == f"Internal error (KeyError), see {app_logging}"
        assert app.is_running
    log = app_logging.read_text()
    assert "Traceback" in log and "in broken" in log and "KeyError: 'bug'" in log


async def test_user_error_keeps_its_sentence_and_markup_is_not_interpreted(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        app.report_error(CorpusError("File [bold]x[/] is empty: give it some text."))
        await pilot.pause()
        assert [n.message for n in notes(app)][-1] == "File [bold]x[/] is empty: give it some text."


async def test_resizing_down_to_40x12_on_every_tab_lays_the_tab_out_again(corpus):
    app = SmallGPTApp(corpus=corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for key, (pane, title, _) in zip("12345", TABS):
            await pilot.press("escape", key)
            tab = app.tab_widget(pane)
            for width, height in [(40, 12), (80, 24)]:
                await pilot.resize_terminal(width, height)
                # The active tab is laid out again inside the new screen, under the tab bar, which scrolls its
                # title into view (at 40 columns the titles do not all fit; the scroll trails the layout).
                await wait_for(pilot, lambda: app.screen.size == (width, height) and tab.region.width > 0
                               and tab.region.height > 0 and app.screen.region.contains_region(tab.region)
                               and title in screen_svg(app), what=f"the {title} tab at {width}x{height}")
                assert "Traceback" not in screen_svg(app)
        assert not notes(app)


def screen_colours(app: SmallGPTApp) -> set[str]:
    """The colours of the screen's text and cell backgrounds, from the SVG screenshot (without the export's
    window frame, and without its default colour for text that has none of its own)."""
    from rich.terminal_theme import SVG_EXPORT_THEME

    svg = screen_svg(app)
    text = re.findall(r"\.terminal-\d+-r\d+ \{ fill: (#[0-9a-f]{6})", svg)
    cells = re.findall(r'<rect fill="(#[0-9a-f]{6})"[^>]*shape-rendering="crispEdges"', svg)
    return set(text + cells) - {SVG_EXPORT_THEME.foreground_color.hex}


@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "NO_COLOR"])
async def test_no_color_draws_every_tab_in_greys(corpus, monkeypatch, no_color):
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    app = SmallGPTApp(corpus=corpus)
    hues: set[str] = set()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key in "12345":
            await pilot.press("escape", key)
            await pilot.pause()
            colours = screen_colours(app)
            assert len(colours) >= 3  # something was drawn
            hues |= {c for c in colours if not c[1:3] == c[3:5] == c[5:7]}
    assert bool(hues) is not no_color, hues  # the same screens in colour have hues: the check can see them


def test_progress_is_throttled_but_the_end_always_arrives(monkeypatch):
    class Sink:
        def __init__(self) -> None:
            self.got: list[Progress] = []

        def post_message(self, message: Progress) -> bool:
            self.got.append(message)
            return True

    now = [100.0]  # the poster's clock, driven by the test
    monkeypatch.setattr(tui.messages, "time", SimpleNamespace(monotonic=lambda: now[0]))
    sink = Sink()
    report = progress_poster(sink, "k", max_rate=10)  # type: ignore[arg-type]
    for i in range(1000):  # 1,000 reports over 0.25 s: the first, then one per 0.1 s
        now[0] = 100.0 + i * 0.00025
        report(i / 1000, "reading")
    assert [m.fraction for m in sink.got] == pytest.approx([0.0, 0.4, 0.8], abs=0.005)
    report(1.0, "done")  # inside the window, but the end always goes out
    assert len(sink.got) == 4 and (sink.got[-1].fraction, sink.got[-1].label) == (1.0, "done")

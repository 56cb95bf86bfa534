"""Loss curves drawn with plotext: the followed run's train and val loss, plus overlaid runs."""

from __future__ import annotations

from dataclasses import dataclass

from textual.reactive import reactive
from textual_plotext import PlotextPlot

# Distinct enough on 16-color terminals; with NO_COLOR the markers still tell the series apart.
COLORS = ("cyan", "orange", "green", "magenta", "yellow", "red", "blue", "white")
MARKERS = ("braille", "dot", "x", "+", "*", "o")


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    right: bool = False  # on the right y axis (a classifier's accuracy, 0..1, beside the losses)


def downsample(x: list[float], y: list[float], max_points: int) -> tuple[list[float], list[float]]:
    """At most `max_points` evenly spaced points, always keeping the last (the newest value)."""
    n = len(x)
    if n <= max_points or max_points < 2:
        return x, y
    stride = (n - 1) / (max_points - 1)
    idx = sorted({round(i * stride) for i in range(max_points)})
    return [x[i] for i in idx], [y[i] for i in idx]


class LossChart(PlotextPlot):
    """Set `series` (and optionally `log_scale`); the plot is rebuilt from them on the next render."""

    log_scale: reactive[bool] = reactive(False)
    series: reactive[list[Series]] = reactive(list, always_update=True)

    def __init__(self, *, id: str | None = None, empty_title: str = "no run yet") -> None:
        super().__init__(id=id)
        self.empty_title = empty_title

    def watch_log_scale(self) -> None:
        self._replot()

    def watch_series(self) -> None:
        self._replot()

    def on_resize(self) -> None:
        # Point budget depends on the width: a braille cell holds 2 columns of points.
        self._replot()

    def _replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.xlabel("step")
        visible = [s for s in self.series if s.x]
        # A log scale needs positive values; losses are, but guard a bad event (0 or negative).
        log = self.log_scale and all(v > 0 for s in visible if not s.right for v in s.y)
        plt.yscale("log" if log else "linear")
        plt.title(("loss (log)" if log else "loss") if visible else self.empty_title)
        budget = max(10, 2 * (self.size.width or 80))
        for i, s in enumerate(visible):
            x, y = downsample(s.x, s.y, budget)
            plt.plot(x, y, label=s.label, color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)],
                     yside="right" if s.right else "left")
        self.refresh()

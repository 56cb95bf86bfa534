"""smallgpt engine: corpora, tokenizers, datasets, models, training, sampling, quantization, inspection.

The engine never imports textual or rich (a test enforces it); the TUI and CLI live in `tui`.
"""

__version__ = "0.1.0"

"""Presentation: the Textual app (`smallgpt-tui`) and the Rich CLI (`smallgpt`). Holds no math."""

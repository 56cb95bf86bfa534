"""Pure Rich rendering shared by the CLI and the TUI (no Textual imports)."""

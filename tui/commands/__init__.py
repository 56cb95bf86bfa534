"""One module per CLI verb; each exposes `run(args, console) -> int` (the exit code)."""

"""Reusable widgets: loss chart, heatmap, token stream, runs table."""

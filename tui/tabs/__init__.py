"""One module per tab; each exposes a widget class mounted inside the app's TabPane of the same name."""

"""The desktop app (PySide6). Nothing in the core imports this package; it reaches the core only
through `kame_desktop.controller` and one Qt bridge (`bridge.py`). One widget per file."""

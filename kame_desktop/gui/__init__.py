"""The desktop app (PySide6), the top layer: nothing in the core imports this package. It drives
the running session only through `kame_desktop.controller` (start, stop, push-to-talk, new
conversation) and hears it only through one Qt bridge (`bridge.py`). Being on top, its dialogs may
also call the core's one-off tools directly: the device list and tone test (`audio.device`), the
connection test (`backend.llm`), the catalog and downloads. One widget per file."""

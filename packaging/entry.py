"""The bundle's executable: the `kame-desktop` command (no command: the desktop app)."""

import multiprocessing

from kame_desktop.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen program that ever spawns must call this first
    main()

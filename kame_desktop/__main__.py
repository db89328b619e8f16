from kame_desktop.cli import main

main()

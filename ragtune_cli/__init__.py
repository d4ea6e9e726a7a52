"""The `ragtune` command line: the top layer, above every stage (ARCHITECTURE.md draws the layers).

    ragtune --help            # the console script runs ragtune_cli.main:main
    python -m ragtune_cli ask "How many days of leave?" -w ws
"""

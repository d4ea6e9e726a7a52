"""`python -m ragtune_cli ...` runs the `ragtune` command (what the tests call in a subprocess)."""

from ragtune_cli.main import main

main()

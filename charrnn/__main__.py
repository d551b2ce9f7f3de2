"""`python -m charrnn` runs the command-line tool."""

from charrnn.cli.commands import main

main()

"""`python -m charrnn` runs the command-line tool."""

from charrnn.cli import main

main()

"""The face: the `charrnn` command.  Parses options, calls runs, core and store, prints; no maths, no policy.

commands   the click commands (train, sample, inspect, eval, export)
options    click parameter types: durations, devices, escaped text, finite ranges, option groups
progress   what training shows: banner, bar or log lines, summary
views      rich tables for inspect and eval
textplot   a small line plot in plain text

May import anything in charrnn, plus click, rich and tqdm, which only this part uses.
"""

from charrnn.cli.commands import main

__all__ = ["main"]

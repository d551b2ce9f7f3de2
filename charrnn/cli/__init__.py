"""The face: the `charrnn` command.  Parses options, calls runs, core and store, prints; no maths, no policy.

commands   the click commands (train, sample, inspect, eval, export)
score      `charrnn score`: each record's log-probability, as JSON lines
viz        `charrnn viz`: an HTML page of what a model does with a text
options    click parameter types: durations, devices, escaped text, finite ranges, option groups
progress   what training shows: banner, bar or log lines, summary
views      rich tables for inspect and eval
textplot   a small line plot in plain text

May import anything in charrnn, plus click, rich and tqdm, which only this part uses.
"""

from charrnn.cli.commands import main
from charrnn.cli.score import score
from charrnn.cli.viz import viz

main.add_command(score)
main.add_command(viz)

__all__ = ["main"]

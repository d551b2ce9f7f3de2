"""`charrnn viz`: one self-contained HTML page of what a model does with a text."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from charrnn.cli.commands import CONTEXT, fail, load_checkpoint
from charrnn.errors import CharrnnError
from charrnn.runs.viz import DEFAULT_LENGTH, GENERATOR, make_page
from charrnn.store.files import write_atomically
from charrnn.store.textstream import text_pieces


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("source", metavar="TEXTFILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The page to write.  Default: TEXTFILE's name with .viz.html, in this directory.")
@click.option("--length", "-n", type=click.IntRange(min=1), default=DEFAULT_LENGTH,
              help="Characters of TEXTFILE to show (from its start).  The page weighs about a byte per character "
                   "for each unit of the model.")
@click.option("--encoding", default="utf-8", help="Text encoding of TEXTFILE (decoded strictly).")
@click.option("--force", is_flag=True, help="Replace OUT even if it is not a page charrnn viz wrote.")
def viz(checkpoint_path, source, out, length, encoding, force):
    """Write an HTML page that looks inside the model as it reads TEXTFILE (- for standard input).

    The page shows the text coloured by any unit (or by the model's surprisal), the units that best track
    features of the text (quotes, brackets, position in the line, ...), gate saturation, how far back the model
    looks, and the run's loss curves.  It is one file with nothing outside it: open it in any browser.
    CHECKPOINT may be a directory train wrote (--out): its best.npz, else its latest.npz.
    """
    path, ck = load_checkpoint(checkpoint_path)
    out = out or Path(("stdin" if source == "-" else Path(source).stem) + ".viz.html")
    try:
        refuse_to_replace(out, [path] + ([] if source == "-" else [Path(source)]), force)
        name = "standard input" if source == "-" else source
        pieces = text_pieces(sys.stdin.buffer if source == "-" else Path(source), encoding, name)
        page, facts = make_page(ck, str(path), pieces, name, length)
        write_atomically(out, lambda f: f.write(page.encode("utf-8")))
    except CharrnnError as e:
        raise fail(e) from None
    click.echo(f"wrote {out} ({len(page.encode('utf-8')) / 1e6:.1f} MB): {facts['text']}, {facts['surprisal']}")


def refuse_to_replace(out: Path, inputs: list[Path], force: bool) -> None:
    """Never write over an input; write over another file only when it is a page charrnn viz wrote, or with
    --force."""
    if not out.exists():
        return
    if any(p.exists() and out.resolve() == p.resolve() for p in inputs):
        raise CharrnnError(f"{out} is an input of this command; choose another page to write with --out")
    if force:
        return
    try:
        with open(out, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise CharrnnError(f"cannot read {out}: {e.strerror or e}") from None
    if GENERATOR.encode("utf-8") not in head:
        raise CharrnnError(f"{out} exists and is not a page charrnn viz wrote; pass --force to replace it")

"""`charrnn score`: how likely the model finds each record of a text (a line by default), as JSON lines."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click
from tqdm import tqdm

from charrnn.cli.commands import CONTEXT, load_checkpoint, printing
from charrnn.cli.options import Escaped
from charrnn.core.vocab import describe_chars
from charrnn.runs.score import score_records, split_records, whole_text
from charrnn.store.textstream import text_pieces


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("source", metavar="[FILE]", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--sep", type=Escaped(), default=None,
              help="The text between records, in place of a newline: '\\n\\n' for paragraphs, '\\t' for tabs.")
@click.option("--whole", is_flag=True,
              help="Score the whole text as one record: one stream from start to end (as slow as sampling; "
                   "`charrnn eval` scores a big file in parallel streams).")
@click.option("--per-char", is_flag=True, help="Add each scored character's surprisal in bits (-log2 p).")
@click.option("--encoding", default="utf-8", help="Text encoding of FILE (decoded strictly).")
def score(checkpoint_path, source, sep, whole, per_char, encoding):
    """Score each line of FILE (or standard input, also as -) with the model: one JSON object a line.

    Each record is read from a fresh state, as if it began a line, and every character of it is scored:
    {"record", "text", "chars", "nats", "bits_per_char", "perplexity", "skipped", "unknown"}.  Characters
    outside the model's vocabulary are skipped, counted and named, as `charrnn eval` does.  CHECKPOINT may be a
    directory train wrote (--out): its best.npz, else its latest.npz.
    """
    if whole and sep is not None:
        raise click.UsageError("--whole scores the text as one record; it takes no --sep")
    _, ck = load_checkpoint(checkpoint_path)
    name = "standard input" if source == "-" else source
    pieces = text_pieces(sys.stdin.buffer if source == "-" else Path(source), encoding, name)
    skipped = Counter()
    with printing(), tqdm(disable=None, file=sys.stderr, unit=" records", leave=False, desc="scoring") as bar:
        if whole:
            results = [{"file": name, **whole_text(ck.model, ck.vocab, pieces, per_char)}]
        else:
            results = score_records(ck.model, ck.vocab, split_records(pieces, sep or "\n"), per_char)
        for r in results:
            sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
            skipped.update({u["char"]: u["count"] for u in r["unknown"]})
            bar.update()
    if skipped:
        chars = [ch for ch, _ in skipped.most_common()]
        click.echo(f"charrnn: skipped {sum(skipped.values()):,} character(s) outside the model's vocabulary: "
                   f"{describe_chars(chars)}", err=True)

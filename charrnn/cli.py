"""The command-line interface (placeholder until the commands land)."""

import click


@click.group()
def main():
    """charrnn: character-level language models in NumPy."""

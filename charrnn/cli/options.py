"""click parameter types and helpers of the command line: durations, devices, escaped text, finite ranges,
encodings, option groups."""

from __future__ import annotations

import math
import re

import click

from charrnn.store.corpus import encoding_problem

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
INT64_MAX = 2**63 - 1


class Escaped(click.ParamType):
    """Text in which \\n, \\t, \\r and \\\\ stand for newline, tab, carriage return and backslash; empty
    text is refused unless allow_empty."""

    name = "text"

    def __init__(self, allow_empty: bool = False):
        self.allow_empty = allow_empty

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        text = re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(0)), value)
        if not text and not self.allow_empty:
            self.fail("must not be empty", param, ctx)
        return text


class Count(click.IntRange):
    """A whole number from min up to 2^63 - 1: no count charrnn takes needs more, and every one then stays an
    int64 and a float (a 400-digit --warmup overflowed the learning rate's arithmetic)."""

    def __init__(self, min: int = 0):
        super().__init__(min, INT64_MAX)

    def _describe_range(self) -> str:  # click's text for help and refusals, short of 19 digits
        return f"{self.min}<=x<2^63"


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which pass its comparisons)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


class Encoding(click.ParamType):
    """The name of a codec that turns bytes into text (utf-8, latin-1, utf-16, ...)."""

    name = "encoding"

    def convert(self, value, param, ctx):
        problem = encoding_problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


class CountOrAll(click.ParamType):
    """A count of at least 1, or "all" (None): how much of something to take."""

    name = "count|all"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower().replace("_", "").replace(",", "")
        if text == "all":
            return None
        if not text.isdigit() or int(text) < 1:
            self.fail(f"{value!r} is neither a count of at least 1 nor 'all'", param, ctx)
        return int(text)


class Device(click.ParamType):
    """A PyTorch device name: cpu, cuda, cuda:N or mps (whether it exists here is the engine's to say)."""

    name = "device"

    def convert(self, value, param, ctx):
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(value)):
            self.fail(f"{value!r} is not a device; choose cpu, cuda, cuda:N or mps", param, ctx)
        return str(value)


class Duration(click.ParamType):
    """A wall-clock duration longer than 0: 90s, 10m, 2h, 1h30m, or plain seconds."""

    name = "duration"
    UNITS = {"h": 3600, "m": 60, "s": 1}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):  # plain seconds
            text += "s"
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration such as 90s, 10m, 2h or 1h30m", param, ctx)
        seconds = sum(float(n) * self.UNITS[u] for n, u in parts)
        if not math.isfinite(seconds):  # 400 nines are a float's infinity
            self.fail(f"{value!r} is longer than any run can be", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} is no time at all; give a duration such as 90s, 10m or 2h", param, ctx)
        return seconds


class GroupedCommand(click.Command):
    """Prints options under headings (data, model, optimisation, ...) like char-rnn's flag list."""

    def format_options(self, ctx, formatter):
        groups: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record:
                groups.setdefault(getattr(param, "group", "Other"), []).append(record)
        groups["Other"] = groups.pop("Other", [])  # --help last
        for title, records in groups.items():
            with formatter.section(title):
                formatter.write_dl(records)


def opt(group: str, *decls, **kwargs):
    """click.option that remembers its help group."""

    def decorator(f):
        click.option(*decls, **kwargs)(f)
        f.__click_params__[-1].group = group
        return f

    return decorator

"""Hostile checkpoints: a real checkpoint's bytes, zip structure, members, arrays and metadata, mutated thousands
of ways.  Every mutant is either refused by checkpoint.load with a CharrnnError, or loads into a checkpoint that
inspect, sample, eval and --resume use without any other exception or NumPy warning; and load never allocates
more than the good checkpoint's arrays plus MARGIN (tracemalloc's peak), so nothing a file declares is inflated
unless the model needs it.  Some hundreds go through the command line in-process, a few through the real process.

Seeded: the same cases every run.  CHARRNN_FUZZ_SEED and CHARRNN_FUZZ_CASES explore others (a failure prints the
seed, the case number and the mutation, which reproduce it alone).
"""

import functools
import io
import json
import math
import os
import random
import re
import subprocess
import sys
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main
from charrnn.core.model import ModelConfig
from charrnn.core.sample import sample_text
from charrnn.errors import CharrnnError
from charrnn.runs.evaluate import score
from charrnn.runs.inspect import describe
from charrnn.runs.policy import resumed_settings
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text

SEED = int(os.environ.get("CHARRNN_FUZZ_SEED", "20240523"))
CASES = int(os.environ.get("CHARRNN_FUZZ_CASES", "1500"))  # in-process loads
CLI_CASES = 120  # of those, also through `charrnn sample|inspect|eval` in-process
PROCESS_CASES = 4  # and through `python -m charrnn sample` in a process of its own
MARGIN = 32 << 20  # bytes: the metadata's parse (1 MiB of hostile JSON costs up to ~27 MB), zip and numpy overhead
TEXT = "".join(f"{i} green bottles, hanging on the wall; if one should fall...\n" for i in range(30))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real run's latest.npz: LSTM 1x8, Adam state, carried state of 4 streams, a history of validations."""
    out = tmp_path_factory.mktemp("good")
    corpus = corpus_from_text(TEXT, "bottles.txt")
    cfg = TrainConfig(seq_len=8, batch_size=4, steps=6, eval_every=2, save_every=6, seed=1)
    Trainer(corpus, ModelConfig(vocab_size=len(corpus.vocab), hidden=8, layers=1), cfg, out).run()
    raw = (out / "latest.npz").read_bytes()
    with np.load(out / "latest.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return raw, arrays


# -- mutations: each takes (rng, raw bytes, arrays) and returns (what it did, the mutant's bytes) -------------------

def npz(arrays, compression=zipfile.ZIP_STORED) -> bytes:
    """An .npz as np.savez writes one (members `<name>.npy`), with members as given: arrays or raw .npy bytes."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression) as zf:
        warnings.simplefilter("ignore")  # duplicate names are a mutation here
        for name, value in arrays:
            if isinstance(value, np.ndarray):
                member = io.BytesIO()
                np.lib.format.write_array(member, value, allow_pickle=True)
                value = member.getvalue()
            zf.writestr(name if name.endswith(".npy") or "/" in name else name + ".npy", value)
    return buffer.getvalue()


BOMB = 64 << 20  # bytes a bomb member declares, in under 300 KB: twice MARGIN


@functools.cache
def bomb(name: str) -> bytes:
    """A zip of one .npy member `name` declaring BOMB bytes of float32 zeros, deflated (made once per name)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": (BOMB // 4,)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, zf.open(
            name, "w", force_zip64=True) as m:
        m.write(header.getvalue())
        zero = bytes(1 << 20)
        for _ in range(BOMB >> 20):
            m.write(zero)
    return buffer.getvalue()


def with_bomb(members, name: str) -> bytes:
    """The members, and a bomb named name: the other members appended to the bomb's zip, which stays deflated."""
    buffer = io.BytesIO(bomb(name))
    with zipfile.ZipFile(buffer, "a") as zf:
        for n, v in members:
            member = io.BytesIO()
            np.lib.format.write_array(member, v)
            zf.writestr(n + ".npy", member.getvalue())
    return buffer.getvalue()


def hostile_number(rng):
    return rng.choice([0, -1, 1, 2**31, 2**63, -(2**63), 2**128, 10**400, 1e308, -1e308, math.nan, math.inf,
                       -math.inf, 0.5, 1e-300, 3.4e38, 255, 65536])


def hostile_value(rng):
    return rng.choice([None, True, False, "", "x" * 5000, "\ud800", "café", [], {}, [1, 2], {"a": 1},
                       hostile_number(rng), hostile_number(rng), "latin-1", "base64", "nosuchenc", "PCG64", "sgd"])


def flip_bits(rng, raw, arrays):
    data = bytearray(raw)
    at = []
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data)) if rng.random() < 0.5 else len(data) - 1 - rng.randrange(min(len(data), 3000))
        data[i] ^= 1 << rng.randrange(8)
        at.append(i)
    return f"flip bits at {at}", bytes(data)


def overwrite_run(rng, raw, arrays):
    i, n = rng.randrange(len(raw)), rng.randint(1, 64)
    fill = rng.choice([b"\x00", b"\xff", bytes([rng.randrange(256)])]) * n if rng.random() < 0.5 else rng.randbytes(n)
    return f"overwrite {n} bytes at {i}", raw[:i] + fill[: len(raw) - i] + raw[i + n :]


def cut_or_splice(rng, raw, arrays):
    i, j = sorted(rng.randrange(len(raw) + 1) for _ in range(2))
    return rng.choice([(f"truncate at {i}", raw[:i]), (f"delete [{i}:{j}]", raw[:i] + raw[j:]),
                       (f"insert 1-99 bytes at {i}", raw[:i] + rng.randbytes(rng.randint(1, 99)) + raw[i:]),
                       (f"duplicate [{i}:{j}]", raw[:j] + raw[i:j] + raw[j:]),
                       ("prepend junk", rng.randbytes(rng.randint(1, 500)) + raw),
                       ("append junk", raw + rng.randbytes(rng.randint(1, 500)))])


@functools.cache
def zip_records(raw: bytes) -> list[int]:
    """Where the zip's records start: central-directory entries, local headers, the end records."""
    return [m.start() for m in re.finditer(rb"PK(\x01\x02|\x03\x04|\x05\x06|\x06\x06|\x06\x07)", raw)]


def patch_zip_header(rng, raw, arrays):
    """A random field of a central-directory entry, a local header or the end records set to a hostile value."""
    at = rng.choice(zip_records(raw)) + rng.randrange(4, 46)
    width = rng.choice([1, 2, 4, 8])
    value = rng.choice([0, 1, 2**(8 * width) - 1, rng.randrange(2**(8 * width)), 0x7FFF, 99, 8, 12, 14])
    data = bytearray(raw)
    data[at : at + width] = (value % 2**(8 * width)).to_bytes(width, "little")[: len(raw) - at]
    return f"zip field at {at} ({width} bytes) = {value}", bytes(data)


def change_members(rng, raw, arrays):
    members = list(arrays.items())
    name = rng.choice(list(arrays))
    what = rng.randrange(9)
    if what == 0:
        members = [m for m in members if m[0] != name]
        return f"drop {name}", npz(members)
    if what == 1:
        return f"duplicate {name}", npz(members + [(name, rng.choice([arrays[name], np.zeros(3)]))])
    if what == 2:
        new = rng.choice(["extra", "optim.m.nothing", "state.x", "meta.npy.npy", "../../etc/passwd", "weight_ih_l9",
                          "state.c", "optim.t", "a" * 300])
        return f"add {new}", npz(members + [(new, np.zeros(rng.randint(0, 5), np.float32))])
    if what == 3:
        return f"rename {name}", npz([(rng.choice(["x", name.upper(), name + "x", name[:-1] or "y"]) if n == name
                                       else n, v) for n, v in members])
    if what == 4:
        return "every member deflated", npz(members, zipfile.ZIP_DEFLATED)
    if what == 5:
        return "members in bzip2", npz(members, zipfile.ZIP_BZIP2)
    if what == 6:
        return "a bomb as an extra member", with_bomb(members, "bomb.npy")
    if what == 7:
        name = rng.choice(["weight_hh_l0", "decoder.bias", "vocab", "meta", "optim.v.weight_ih_l0", "state.c"])
        return f"a bomb in place of {name}", with_bomb([m for m in members if m[0] != name], name + ".npy")
    rng.shuffle(members)
    return "members shuffled", npz(members)


def change_array(rng, raw, arrays):
    arrays = dict(arrays)
    name = rng.choice([n for n in arrays if n != "meta"])
    a = arrays[name]
    what = rng.randrange(8)
    if what == 0:
        arrays[name] = a.astype(rng.choice([np.float64, np.float16, np.int32, ">f4", np.uint8, np.complex64]))
    elif what == 1:
        arrays[name] = rng.choice([a.reshape(-1), a[None], a[..., :-1] if a.ndim else a, np.asfortranarray(a.T)])
    elif what == 2:
        arrays[name] = np.array([{"evil": True}], dtype=object)
    elif what == 3 and a.dtype.kind == "f" and a.size:
        a = a.copy()
        for _ in range(rng.randint(1, 3)):
            a.flat[rng.randrange(a.size)] = rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e20, -1.0, 1e10])
        arrays[name] = a
    elif what == 4 and name == "vocab":
        arrays[name] = rng.choice([a[::-1], np.concatenate([a, a[:1]]), a - 200, np.append(a[:-1], 0xD800),
                                   np.append(a[:-1], 0x110000), a.astype(np.int64)])
    elif what == 5:
        arrays[name] = np.zeros((0,) + a.shape[1:], a.dtype)
    elif what == 6 and name == "optim.t":
        arrays[name] = rng.choice([np.array(-5), np.array(2**62), np.array(3.0), np.array([1, 2])])
    else:
        arrays[name] = np.asarray(rng.choice([np.nan, 0, -1, 1e30]), a.dtype if a.dtype.kind == "f" else None)
    return f"array {name}: change {what}", npz(arrays.items())


def paths(node, at=()):
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*at, i))


def change_meta(rng, raw, arrays):
    arrays = dict(arrays)
    meta = json.loads(arrays["meta"].tobytes())
    what = rng.randrange(16)
    if what < 10:  # one field: removed, replaced, wrapped, or given a sibling
        path = rng.choice([p for p in paths(meta) if p])
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        op = rng.choice(["delete", "replace", "replace", "replace", "wrap", "sibling"])
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = hostile_value(rng)
        elif op == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        elif isinstance(parent, dict):
            parent["unknown_field"] = hostile_value(rng)
        text = json.dumps(meta)
        how = f"meta {'.'.join(map(str, path))}: {op}"
    elif what < 13:  # changes that look consistent but do not fit the arrays
        field, value = rng.choice([("model.hidden", 9), ("model.cell", "gru"), ("model.layers", 10**9),
                                   ("model.vocab_size", 5), ("train.batch_size", 10**9), ("train.optimizer", "sgd"),
                                   ("train.batch_size", 2), ("model.dtype", "float64"), ("model.peephole", True),
                                   ("progress.chunk", 10**6), ("train.seq_len", 10**6), ("rng.state.inc", 2**130)])
        section, key = field.split(".", 1)
        target = meta[section]
        for k in key.split(".")[:-1]:
            target = target[k]
        target[key.split(".")[-1]] = value
        text, how = json.dumps(meta), f"meta {field} = {value}"
    elif what == 13:
        meta["history"] = meta["history"] * rng.choice([1000, 1400])
        text, how = json.dumps(meta), f"meta history of {len(meta['history'])} rows"
    else:
        text, how = rng.choice([("[]", "meta a list"), ("7", "meta a number"), ('"x"', "meta a string"),
                                ("[" * 100_000, "meta nested 100,000 deep"),
                                ("{" + '"a":' * 50_000, "meta deep objects"),
                                ("1" * 5000, "meta a 5,000-digit number"), ("NaN", "meta NaN"),
                                (json.dumps({**meta, "pad": "x" * (2 << 20)}), "meta of 2 MB")])
    encoded = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        encoded, how = encoded[: len(encoded) // 2] + b"\xff\xfe" + encoded[len(encoded) // 2 :], how + ", bad UTF-8"
    arrays["meta"] = np.frombuffer(encoded, np.uint8)
    if rng.random() < 0.03:
        arrays["meta"], how = arrays["meta"].astype(rng.choice([np.int8, np.uint16, np.float32])), how + ", dtype"
    return how, npz(arrays.items())


MUTATIONS = [flip_bits, flip_bits, overwrite_run, cut_or_splice, patch_zip_header, patch_zip_header,
             change_members, change_array, change_array, change_meta, change_meta, change_meta, change_meta]


# -- what a mutant must do ------------------------------------------------------------------------------------------

def needed(arrays) -> int:
    """Bytes of every array the good checkpoint holds: what a resumed run reads, at most."""
    return sum(a.nbytes for a in arrays.values())


def use(path, ck: checkpoint.Checkpoint, rng) -> None:
    """What the commands do with a loaded checkpoint, in small: inspect's facts as strict JSON, a sample, a score,
    and a resumed training step where the checkpoint can resume."""
    json.dumps(describe(path), allow_nan=False)
    sample_text(ck.model, ck.vocab, 8, np.random.default_rng(0), temperature=rng.choice([1.0, 0.3, 1e-6]))
    data = np.random.default_rng(0).integers(len(ck.vocab), size=100).astype(ck.vocab.dtype)
    total, count = score(ck.model, data, 4, 8)
    assert math.isfinite(total) and count > 0
    if ck.resumable:
        resumed = checkpoint.load(path, resume=True)
        settings = resumed_settings(resumed, {}, set())
        text = "".join(resumed.vocab.chars) * (1 + 20_000 // len(resumed.vocab))
        corpus = corpus_from_text(text[:20_000], "any.txt").reindexed(resumed.vocab)
        train = TrainConfig.from_dict({**settings, "steps": resumed.meta["progress"]["step"] + 1})
        trainer = Trainer(corpus, resumed.model.cfg, train, path.parent / "resumed", resume=resumed)
        trainer.train_step(trainer.lr)


def same_as(ck: checkpoint.Checkpoint, good_arrays) -> bool:
    """Whether a loaded mutant holds exactly the good checkpoint's model and metadata (a zip timestamp changed)."""
    return (ck.meta == json.loads(good_arrays["meta"].tobytes())
            and all(np.array_equal(p, good_arrays[n]) for n, p in ck.model.params.items()))


def check(path, data: bytes, good_arrays, rng, where: str, measure: bool) -> bool:
    """True if the mutant loaded (and was used, unless the same as the good one); raises AssertionError, naming
    where, on anything not allowed.  measure: trace what load allocates (tracemalloc slows it fourfold)."""
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning is a failure
        if measure:
            tracemalloc.start()
        try:
            ck = checkpoint.load(path, resume=rng.random() < 0.5)
        except CharrnnError as e:
            assert "\n" not in str(e), f"{where}: a message of several lines: {e}"
            return False
        except BaseException as e:
            raise AssertionError(f"{where}: load raised {type(e).__name__}: {str(e)[:300]}") from e
        finally:
            if measure:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                assert peak <= needed(good_arrays) + MARGIN, f"{where}: load allocated {peak:,} bytes"
        try:
            if not same_as(ck, good_arrays):
                use(path, ck, rng)
        except CharrnnError:
            pass
        except BaseException as e:
            raise AssertionError(f"{where}: loaded, then {type(e).__name__}: {str(e)[:300]}") from e
    return True


INFLATING = (change_members, patch_zip_header)  # where a member can declare more than its bytes hold


def mutants(good, count, seed):
    raw, arrays = good
    rng = random.Random(seed)
    for case in range(count):
        mutate = rng.choice(MUTATIONS)
        how, data = mutate(rng, raw, arrays)
        yield case, f"seed {seed} case {case}: {mutate.__name__}: {how}", data, rng, mutate in INFLATING


def test_every_mutant_is_refused_in_one_line_or_works(good, tmp_path):
    loaded = 0
    for case, where, data, rng, inflating in mutants(good, CASES, SEED):
        loaded += check(tmp_path / f"m{case % 7}.npz", data, good[1], rng, where, inflating or case % 8 == 0)
    assert 0.03 * CASES < loaded < 0.6 * CASES, loaded  # the mutations reach both outcomes


def test_through_the_command_line(good, tmp_path):
    """A mutant through `charrnn sample`, `inspect` and `eval` (in-process): exit 0, or 1 with one `Error:` line;
    never a traceback or a warning."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    runner = CliRunner()
    for _, where, data, rng, _ in mutants(good, CLI_CASES, SEED + 1):
        path = tmp_path / "mutant.npz"
        path.write_bytes(data)
        args = rng.choice([["sample", path, "-n", "20", "--seed", "1"], ["inspect", "--json", path],
                           ["eval", "--json", path, text]])
        result = runner.invoke(main, [str(a) for a in args])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code in (0, 1) and not isinstance(result.exception, Exception), (where, result.output)
        assert "Traceback" not in result.output and "Warning" not in result.output, (where, result.output)
        if result.exit_code == 1:
            assert len(lines) == 1 and lines[0].startswith("Error: "), (where, result.stderr)
        elif args[0] != "sample":
            json.loads(result.stdout)  # strict JSON: no NaN


def test_through_the_real_process(good, tmp_path):
    for case, where, data, _, _ in mutants(good, PROCESS_CASES, SEED + 2):
        path = tmp_path / f"mutant{case}.npz"
        path.write_bytes(data)
        run = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(path), "-n", "20"], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode in (0, 1) and "Traceback" not in run.stderr, (where, run.stderr)
        assert run.returncode == 0 or run.stderr.count("\n") == 1, (where, run.stderr)


def test_the_mutations_reach_their_targets(good):
    """A bomb declares 64 MB in under 1 MB; every kind of mutation changes the file (nearly) every time."""
    raw, arrays = good
    with zipfile.ZipFile(io.BytesIO(with_bomb(list(arrays.items()), "bomb.npy"))) as zf:
        info = zf.getinfo("bomb.npy")
        assert info.file_size > BOMB >= 2 * MARGIN and info.compress_size < 1 << 20
        assert len(zf.infolist()) == len(arrays) + 1
    rng = random.Random(0)
    for mutate in set(MUTATIONS):
        changed = sum(mutate(rng, raw, arrays)[1] != raw for _ in range(20))
        assert changed >= 18, mutate.__name__

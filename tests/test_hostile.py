"""Bad input, class by class (issue 23), through the real command line: every case ends with its exit status (1,
or 2 for a bad option value), one line on stderr, no traceback and no NumPy warning; a good checkpoint beside it
keeps its SHA-256, and no file is left behind that was not there.  The signals go through the real process, at
exact moments (tests/stop_at.py); the fuzzing of checkpoints is tests/test_fuzz.py."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main
from charrnn.store import cache, checkpoint, corpus

TEXT = "".join(f"{i} green bottles, hanging on the wall; if one green bottle should fall...\n" for i in range(60))
SMALL = ["-B", "4", "-T", "16", "-H", "16", "-L", "1", "--eval-every", "3", "--save-every", "3"]
STOP_AT = Path(__file__).parent / "stop_at.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run's directory: best.npz and latest.npz of an LSTM 1x16 after 6 steps, and its corpus."""
    root = tmp_path_factory.mktemp("trained")
    (root / "bottles.txt").write_text(TEXT)
    result = CliRunner().invoke(main, ["train", str(root / "bottles.txt"), "-o", str(root / "ck"), "--steps", "6",
                                       *SMALL])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def scene(trained, tmp_path, monkeypatch):
    """A copy of the trained run in tmp_path (the working directory), with the SHA-256 of every file in it."""
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return Scene(tmp_path)


class Scene:
    def __init__(self, root: Path):
        self.root = root
        self.before = self.files()

    def files(self) -> dict[str, str]:
        """relative path -> SHA-256 (or the kind of what is there) of everything under root, but a run lock's
        content (the pid of its last holder)."""
        found = {}
        for path in sorted(self.root.rglob("*")):
            if path.name == ".charrnn.lock":
                continue
            mode = path.lstat().st_mode
            key = str(path.relative_to(self.root))
            found[key] = (hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(mode)
                          else "dir" if stat.S_ISDIR(mode) else oct(stat.S_IFMT(mode)))
        return found

    def assert_untouched(self, *new) -> None:
        """Every file there before is unchanged; nothing new but `new` (names under root); no temporary file."""
        now = self.files()
        changed = {k for k, v in self.before.items() if now.get(k) != v}
        added = set(now) - set(self.before) - set(new)
        assert not changed and not added, f"changed {sorted(changed)}, added {sorted(added)}"


def run(*args, env=None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args])


def refused(result, code: int, *fragments: str) -> None:
    """Exit status `code`, one line on stderr holding every fragment, no traceback, no warning, nothing on stdout."""
    output = result.output if hasattr(result, "output") else result.stdout + result.stderr
    status = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert status == code, output
    assert "Traceback" not in output and "Warning" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(f in lines[-1] for f in fragments), result.stderr
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert getattr(result, "exception", None) is None or isinstance(result.exception, SystemExit), result.exception


def rewrite(path: Path, change) -> None:
    """Rewrite a checkpoint's arrays by hand (np.savez), as a hostile file would be made: change(arrays, meta)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta = change(arrays, meta) or meta
    arrays["meta"] = np.frombuffer(meta if isinstance(meta, bytes) else json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


def python(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, **kwargs)


# -- 1. metadata is checked field by field -----------------------------------------------------------------------

META_DAMAGE = {
    "a list": (lambda a, m: b"[1, 2]", "metadata names no charrnn format"),
    "nested 100,000 deep": (lambda a, m: b"[" * 100_000, "damaged metadata (RecursionError"),
    "history a string": (lambda a, m: {**m, "history": "long"}, "metadata field history must be a list"),
    "a row without its loss": (lambda a, m: {**m, "history": [{"step": 1}]}, "history[0].epoch is missing"),
    "schedule a number": (lambda a, m: {**m, "schedule": 3}, "metadata field schedule must be an object"),
    "best_val_loss text": (lambda a, m: {**m, "best_val_loss": "low"}, "best_val_loss must be a number"),
    "corpus a list": (lambda a, m: {**m, "corpus": []}, "metadata field corpus must be an object"),
    "rng foreign": (lambda a, m: {**m, "rng": {**m["rng"], "bit_generator": "MT19937"}}, "rng.bit_generator"),
    "step text": (lambda a, m: {**m, "progress": {**m["progress"], "step": "soon"}}, "progress.step must be an"),
    "step negative": (lambda a, m: {**m, "progress": {**m["progress"], "step": -3}}, "progress.step must be an"),
    "an unknown field": (lambda a, m: {**m, "mystery": 1}, "has a field charrnn does not know: 'mystery'"),
    "encoding bogus": (lambda a, m: {**m, "train": {**m["train"], "encoding": "rot13"}}, "train.encoding"),
    "a 5,000-digit number": (lambda a, m: json.dumps(m).replace('"step": 6', '"step": ' + "9" * 5000).encode(),
                             "damaged metadata"),
}


@pytest.mark.parametrize("damage", META_DAMAGE, ids=list(META_DAMAGE))
@pytest.mark.parametrize("command", ["inspect", "sample", "resume"])
def test_1_metadata_is_checked_field_by_field(scene, damage, command):
    change, fragment = META_DAMAGE[damage]
    rewrite(Path("ck/latest.npz"), change)
    scene.before = scene.files()
    args = {"inspect": ["inspect", "ck/latest.npz"], "sample": ["sample", "ck/latest.npz", "-n", "5"],
            "resume": ["train", "bottles.txt", "-o", "ck", "--resume", "--steps", "9"]}[command]
    refused(run(*args), 1, "ck/latest.npz", fragment)
    scene.assert_untouched()


# -- 2. carried state is whole or absent ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["resume", "sample"])
def test_2_partial_carried_state_is_refused(scene, command):
    rewrite(Path("ck/latest.npz"), lambda a, m: a.pop("state.c") is None)
    scene.before = scene.files()
    args = (["train", "bottles.txt", "-o", "ck", "--resume", "--steps", "9"] if command == "resume"
            else ["sample", "ck/latest.npz"])
    refused(run(*args), 1, "holds part of its carried state: 'state.c' is missing")
    scene.assert_untouched()


# -- 3. non-finite and overflowing weights are refused at load -----------------------------------------------------

@pytest.mark.parametrize("value, fragment", [(np.nan, "1 non-finite value(s)"), (np.inf, "1 non-finite value(s)"),
                                             (3e38, "1 value(s) beyond")])
@pytest.mark.parametrize("command", ["sample", "eval", "inspect", "init-from", "export"])
def test_3_non_finite_weights_are_refused_naming_the_parameter(scene, value, fragment, command):
    def poison(arrays, meta):
        arrays["decoder.weight"][2, 3] = value

    rewrite(Path("ck/best.npz"), poison)
    scene.before = scene.files()
    args = {"sample": ["sample", "ck/best.npz"], "eval": ["eval", "--json", "ck/best.npz", "bottles.txt"],
            "inspect": ["inspect", "ck/best.npz"], "export": ["export", "ck/best.npz", "out.npz"],
            "init-from": ["train", "bottles.txt", "-o", "tuned", "--init-from", "ck/best.npz", "--steps", "2"]}[command]
    refused(run(*args), 1, "ck/best.npz", "parameter 'decoder.weight' has", fragment)
    scene.assert_untouched()


# -- 4. memory is bounded by the model, not by the file ------------------------------------------------------------

def deflated_zeros(path: Path, name: str, nbytes: int, others: dict) -> None:
    """A checkpoint holding `others` and a member `name` that inflates to nbytes of float32 zeros."""
    import zipfile

    np.savez(path, **others)
    header = {"descr": "<f4", "fortran_order": False, "shape": (nbytes // 4,)}
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, zf.open(
            name + ".npy", "w", force_zip64=True) as m:
        np.lib.format.write_array_header_2_0(m, header)
        for _ in range(nbytes >> 20):
            m.write(bytes(1 << 20))


@pytest.mark.parametrize("name, fragment", [("extra", "unexpected entries: 'extra'"),
                                            ("decoder.weight", "parameter 'decoder.weight' is float32[")])
def test_4_a_member_that_inflates_is_refused_before_it_is_read(scene, tmp_path, name, fragment):
    """A 384 MB member in a 0.5 MB file: refused from its header and entry, the data never inflated (the process
    stays far below what inflating it would take)."""
    with np.load("ck/best.npz") as z:
        others = {k: z[k] for k in z.files if k != name}
    deflated_zeros(tmp_path / "bomb.npz", name, 384 << 20, others)
    assert (tmp_path / "bomb.npz").stat().st_size < 2 << 20
    scene.before = scene.files()
    # The peak from /proc (VmHWM, this process's own), not getrusage's ru_maxrss, which Linux carries across
    # fork and exec: a child of a big pytest would report the parent's peak.
    code = "import re, sys; from charrnn.__main__ import main; sys.argv = ['charrnn', 'sample', 'bomb.npz']\n" \
           "try:\n    main()\nfinally:\n" \
           "    print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1], file=sys.stderr)"
    result = python("-c", code, cwd=tmp_path)
    *message, rss_kb = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(message) == 1 and fragment in message[0], result.stderr
    assert int(rss_kb) < 200_000, f"peak RSS {int(rss_kb) // 1024} MB"
    scene.assert_untouched()


# -- 5. outputs: only their own kind, never a training checkpoint, only regular files -----------------------------

def special(tmp_path: Path, kind: str) -> Path:
    """A path to something that is not a regular file."""
    path = tmp_path / f"{kind}.npz"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a null device, in the test's own directory
    elif kind == "symlink":
        path.symlink_to("bottles.txt")
    elif kind == "dangling":
        path.symlink_to("nowhere.npz")
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink", "dangling", "directory"])
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_5_export_writes_only_regular_files(scene, tmp_path, kind, force):
    target = special(tmp_path, kind)
    scene.before = scene.files()
    refused(run("export", "ck/best.npz", target.name, *force), 1, target.name)
    scene.assert_untouched()


def test_5_export_replaces_its_own_kind_others_only_with_force_and_a_checkpoint_never(scene):
    assert run("export", "ck/best.npz", "weights.npz").exit_code == 0
    assert run("export", "ck/latest.npz", "weights.npz").exit_code == 0  # its own kind: replaced
    scene.before = scene.files()
    for target, force in [("ck/latest.npz", []), ("ck/latest.npz", ["--force"]), ("ck/best.npz", ["--force"]),
                          ("bottles.txt", [])]:
        refused(run("export", "ck/best.npz", target, *force), 1, target)
    scene.assert_untouched()
    assert run("export", "ck/best.npz", "bottles.txt", "--force").exit_code == 0  # asked for


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling", "directory"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_5_train_writes_only_regular_checkpoints(scene, tmp_path, kind, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    special(tmp_path, kind).rename(out / "latest.npz")
    scene.before = scene.files()
    refused(run("train", "bottles.txt", "-o", out, "--steps", "3", *SMALL, *overwrite), 1, "latest.npz")
    scene.assert_untouched()


def test_5_train_replaces_a_file_that_is_not_a_checkpoint_only_with_overwrite(scene, tmp_path):
    Path("notes").mkdir()
    Path("notes/best.npz").write_text("my notes")
    scene.before = scene.files()
    refused(run("train", "bottles.txt", "-o", "notes", "--steps", "3", *SMALL), 1, "notes/best.npz",
            "not a charrnn checkpoint", "--overwrite")
    scene.assert_untouched()


def test_5_the_corpus_cache_leaves_links_and_foreign_files_alone(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CACHE_MIN_BYTES", 1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    Path("bottles.txt.charrnn-cache.npy").symlink_to("ck/best.npz")  # replacing the link would lose it
    Path("bottles.txt.charrnn-cache.json").write_text("my own file, not a cache record")
    scene.before = scene.files()
    assert run("train", "bottles.txt", "-o", "new", "--steps", "3", *SMALL).exit_code == 0
    scene.assert_untouched("new", "new/latest.npz", "new/best.npz", "home-cache", *(
        str(p.relative_to(tmp_path)) for p in (tmp_path / "home-cache").rglob("*")))  # it went to the user's cache


# -- 6. one run per directory ----------------------------------------------------------------------------------------

def test_6_a_second_run_into_a_directory_in_use_is_refused_naming_the_first(scene, tmp_path):
    first = subprocess.Popen([sys.executable, "-m", "charrnn", "train", "bottles.txt", "-o", "busy", "--steps",
                              "100000", "--log-every", "1", *SMALL], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    try:
        for line in first.stdout:  # training has begun (the lock is held) and step 3's save is done
            if line.startswith("step 4/"):
                break
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = run("train", "bottles.txt", "-o", "busy", "--steps", "5", *SMALL, *extra)
            refused(second, 1, "busy is in use by another training run", f"pid {first.pid}")
        assert first.poll() is None  # untouched by the attempts
    finally:
        first.kill()  # kill -9: the lock goes with the process
        first.communicate()
    further = str(checkpoint.read_meta("busy/latest.npz")["progress"]["step"] + 3)
    resumed = run("train", "bottles.txt", "-o", "busy", "--resume", "--steps", further, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert not list(Path("busy").glob(".*.tmp"))


def test_6_a_refused_run_leaves_no_directory_behind(scene):
    refused(run("train", "missing.txt", "-o", "fresh", "--steps", "3"), 1, "missing.txt")
    scene.assert_untouched()


# -- 7. a damaged corpus cache is rebuilt, never a crash -----------------------------------------------------------

def damage_npy(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-50:-40] = b"\xff" * 10  # indices far outside the vocabulary
    path.write_bytes(bytes(data))


CACHE_DAMAGE = {
    "bytes of the array": lambda npy, rec: damage_npy(npy),
    "the array cut short": lambda npy, rec: npy.write_bytes(npy.read_bytes()[:-100]),
    "the record not JSON": lambda npy, rec: rec.write_text("{not json"),
    "the record nested deep": lambda npy, rec: rec.write_text("[" * 100_000),
    "the record's types": lambda npy, rec: rec.write_text(rec.read_text().replace('"chars": ', '"chars": "')
                                                          .replace(', "crc32"', '", "crc32"')),
    "a wrong vocabulary": lambda npy, rec: rec.write_text(rec.read_text().replace('"vocabulary": "\\n',
                                                                                  '"vocabulary": "\\t')),
    "the array a FIFO": lambda npy, rec: (npy.unlink(), os.mkfifo(npy)),
}


@pytest.mark.parametrize("damage", CACHE_DAMAGE, ids=list(CACHE_DAMAGE))
def test_7_a_damaged_cache_is_rebuilt(scene, tmp_path, monkeypatch, damage):
    monkeypatch.setattr(corpus, "CACHE_MIN_BYTES", 1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    npy, record = Path("bottles.txt.charrnn-cache.npy"), Path("bottles.txt.charrnn-cache.json")
    first = run("eval", "--json", "ck/best.npz", "bottles.txt")
    assert first.exit_code == 0 and npy.exists() and record.exists(), first.output
    CACHE_DAMAGE[damage](npy, record)
    for args in (["eval", "--json", "ck/best.npz", "bottles.txt"], ["train", "bottles.txt", "-o", "again", "--steps",
                                                                     "3", *SMALL]):
        result = run(*args)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert json.loads(run("eval", "--json", "ck/best.npz", "bottles.txt").stdout)["loss"] == json.loads(
        first.stdout)["loss"]  # the same text as before the damage
    assert cache.load_cache(Path("bottles.txt"), "utf-8") is not None  # rebuilt (beside it, or in the user's)


# -- 8. a model that cannot fit is refused before anything is allocated -------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["train", "bottles.txt", "-o", "huge", "-H", "100000"], "training LSTM 2x100000 at --batch-size 32"),
    (["train", "bottles.txt", "-o", "huge", "-L", "500", "-H", "2048"], "training LSTM 500x2048"),
    (["sample", "ck/best.npz", "-N", "1000000000"], "sampling 1,000,000,000 stream(s)"),
])
def test_8_a_model_that_cannot_fit_is_refused_with_its_size(scene, args, fragment):
    refused(run(*args), 1, fragment, "needs", "B of memory, and", "is available")
    scene.assert_untouched()


def test_8_evaluation_chunks_are_sized_before_they_are_allocated(scene, monkeypatch):
    monkeypatch.setattr("charrnn.store.memory.available", lambda: 1_000_000)  # room for the model, not the chunk
    refused(run("eval", "ck/best.npz", "bottles.txt", "-T", "3000", "-B", "1"), 1,
            "scoring in chunks of --batch-size 1 x --seq-len 3,000 needs", "MB of memory, and 1.0 MB is available")
    scene.assert_untouched()


def test_8_memory_that_runs_out_anyway_is_one_line(scene, monkeypatch):
    """Where a limit the checks cannot see (ulimit -v) makes NumPy fail after all."""
    def exhausted(path):
        raise MemoryError

    monkeypatch.setattr("charrnn.cli.commands.describe", exhausted)
    refused(run("inspect", "ck/best.npz"), 1, "out of memory")
    scene.assert_untouched()


# -- 9. encodings: an option value, a byte offset, no code point UTF-8 cannot write -------------------------------

@pytest.mark.parametrize("command", [["train", "bottles.txt", "-o", "x"], ["eval", "ck/best.npz", "bottles.txt"]])
@pytest.mark.parametrize("encoding, fragment", [("nosuchenc", "unknown encoding 'nosuchenc'"),
                                                ("rot13", "'rot13' is not a text encoding"),
                                                ("utf\0-8", "unknown encoding")])
def test_9_the_encoding_is_an_option_value(scene, command, encoding, fragment):
    refused(run(*command, "--encoding", encoding), 2, "--encoding", fragment)
    scene.assert_untouched()


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("content, encoding, fragment", [
    ("hello\n".encode("utf-16-le") * 100, "utf-16", "does not start with BOM at byte offset 0"),
    ("hello\n".encode("utf-32-le") * 100, "utf-32", "at byte offset 0"),
    (b"caf\xe9 " * 300, "utf-8", "byte offset 3"),
    (b"abc \\ud800 def\n" * 100, "unicode_escape", "lone surrogate U+D800 at character offset 4"),
    (b"abc \\udfff\n" * 100, "raw_unicode_escape", "lone surrogate U+DFFF at character offset 4"),
])
def test_9_decoding_errors_are_one_line_with_the_offset(scene, command, content, encoding, fragment):
    Path("odd.txt").write_bytes(content)
    scene.before = scene.files()
    args = (["train", "odd.txt", "-o", "x", "--steps", "2"] if command == "train"
            else ["eval", "ck/best.npz", "odd.txt"])
    refused(run(*args, "--encoding", encoding), 1, "odd.txt", fragment)
    scene.assert_untouched()


def test_9_a_checkpoint_vocabulary_with_a_lone_surrogate_is_refused_naming_the_file(scene):
    rewrite(Path("ck/best.npz"), lambda a, m: a.update(vocab=np.append(a["vocab"][:-1], 0xD800).astype(np.int32)))
    scene.before = scene.files()
    refused(run("sample", "ck/best.npz"), 1, "ck/best.npz", "lone surrogate U+D800")
    scene.assert_untouched()


# -- 10. signals at any moment: 130 or 143, one true line ----------------------------------------------------------

def stopped(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Aborted" not in result.stderr and "Exception" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), result.stderr


@pytest.mark.parametrize("moment", ["import:charrnn.runs.signals", "import:numpy", "import:click", "import:rich"])
@pytest.mark.parametrize("sig, code", [("INT", 130), ("TERM", 143)])
def test_10_a_signal_while_python_imports_is_honoured(scene, moment, sig, code):
    stopped(python(STOP_AT, moment, sig, "--", "inspect", "ck/best.npz"), code, "charrnn: ")
    scene.assert_untouched()


@pytest.mark.parametrize("command, moment", [
    (["inspect", "ck/best.npz"], "call:charrnn.runs.inspect.describe:1"),
    (["eval", "ck/best.npz", "bottles.txt"], "call:charrnn.runs.evaluate.score:1"),
    (["sample", "ck/best.npz", "-n", "100000"], "call:charrnn.core.stepper.Stepper.step:50"),
    (["export", "ck/best.npz", "w.npz"], "call:charrnn.store.checkpoint.atomic_savez:1"),
])
@pytest.mark.parametrize("sig, code", [("INT", 130), ("TERM", 143)])
def test_10_a_signal_during_a_command_is_honoured(scene, command, moment, sig, code):
    stopped(python(STOP_AT, moment, sig, "--", *command), code, "charrnn: ")
    scene.assert_untouched()


def latest_step() -> int | None:
    try:
        return checkpoint.read_meta("run/latest.npz")["progress"]["step"]
    except Exception:
        return None


SAVES = "call:charrnn.store.checkpoint.atomic_savez"  # every checkpoint save goes through it


@pytest.mark.parametrize("moments, length, code, says", [
    # the first SIGTERM stops the loop, the second lands in the final save: nothing saved, and it says so
    (["call:charrnn.runs.train.Trainer.train_step:4", "TERM", f"{SAVES}:1", "TERM"],
     ["--steps", "100000", "--save-every", "1000"], 143, "terminated; no checkpoint was written"),
    # saves at steps 2 and 4; a SIGTERM at step 5, a second in the final save: it names the step the file holds
    (["call:charrnn.runs.train.Trainer.train_step:5", "TERM", f"{SAVES}:3", "TERM"],
     ["--steps", "100000", "--save-every", "2"], 143, "run/latest.npz holds step 4 "),
    # a Ctrl-C after the final save, before the exit
    (["call:charrnn.cli.commands.print_summary:1", "INT"], ["--steps", "6"], 130, "run/latest.npz holds step 6 "),
    # one while the corpus is read, before training
    (["call:charrnn.store.corpus.scan:1", "INT"], ["--steps", "6"], 130, "before training began; nothing was written"),
])
def test_10_a_signal_around_a_save_gets_a_true_message(scene, moments, length, code, says):
    result = python(STOP_AT, *moments, "--", "train", "bottles.txt", "-o", "run", *SMALL, "--eval-every", "1000",
                    *length)
    stopped(result, code, says)
    step = latest_step()
    assert f"holds step {step:,} " in result.stderr if step is not None else "holds" not in result.stderr
    scene.assert_untouched(*(str(p) for p in Path("run").glob("*npz")), "run")


# -- 11. messages say what a path is ----------------------------------------------------------------------------

@pytest.mark.parametrize("make, fragment", [
    (lambda: (os.mkfifo("pipe.txt"), "pipe.txt")[1], "is a named pipe (FIFO), not a regular file"),
    (lambda: "/dev/zero", "is a character device, not a regular file"),
    (lambda: (os.symlink("loop.txt", "loop.txt"), "loop.txt")[1], "is a loop of symbolic links"),
    (lambda: (os.symlink("gone.txt", "link.txt"), "link.txt")[1], "is a symbolic link to gone.txt, which does not"),
    (lambda: "ck", "is a directory"),
])
@pytest.mark.parametrize("command", ["train", "eval", "sample"])
def test_11_a_path_that_is_not_a_regular_file_is_named_for_what_it_is(scene, make, fragment, command):
    path = make()
    if command == "sample" and path == "ck":
        return  # a run directory is a fine CHECKPOINT
    scene.before = scene.files()
    args = {"train": ["train", path, "-o", "x", "--steps", "2"], "eval": ["eval", "ck/best.npz", path],
            "sample": ["sample", path]}[command]
    if path == "pipe.txt":  # in a process of its own, with a timeout: were a FIFO opened to read, it would block
        refused(python("-m", "charrnn", *args, timeout=60), 1, fragment)
    else:
        refused(run(*args), 1, fragment)
    scene.assert_untouched()


@pytest.mark.parametrize("make, code, fragment", [
    (lambda: (os.symlink("nowhere", "dangling"), "dangling")[1], 1,
     "cannot write checkpoints to dangling: it is a symbolic link to nowhere, which does not exist"),
    (lambda: "/dev/null", 1, "cannot write checkpoints to /dev/null: it is a character device, not a directory"),
    (lambda: "bottles.txt", 2, "Directory 'bottles.txt' is a file"),  # click's own check of --out's value
])
def test_11_an_out_that_is_not_a_directory_is_named_for_what_it_is(scene, make, code, fragment):
    out = make()
    scene.before = scene.files()
    refused(run("train", "bottles.txt", "-o", out, "--steps", "2", *SMALL), code, fragment)
    scene.assert_untouched()


def test_11_characters_outside_the_vocabulary_name_the_corpus(scene):
    Path("other.txt").write_text(TEXT + "Ωmega\n")
    scene.before = scene.files()
    refused(run("train", "other.txt", "-o", "ck", "--resume", "--steps", "9", "--force"), 1, "other.txt",
            "outside the vocabulary", "'Ω'")
    scene.assert_untouched()


# -- 12. --resume never replaces another run's best.npz ------------------------------------------------------------

def test_12_resume_refuses_to_replace_another_runs_best(scene):
    assert run("train", "bottles.txt", "-o", "other", "--steps", "3", *SMALL, "-H", "24").exit_code == 0
    shutil.copy("other/best.npz", "ck/best.npz")  # another run's best, beside this run's latest
    scene.before = scene.files()
    for args in (["--resume"], ["--resume", "ck"], ["--resume", "ck/latest.npz"]):
        refused(run("train", "bottles.txt", "-o", "ck", *args, "--steps", "30"), 1, "ck/best.npz",
                "belongs to another run")
    scene.assert_untouched()
    assert run("train", "bottles.txt", "-o", "ck", "--resume", "--steps", "9").exit_code == 1
    assert run("train", "bottles.txt", "-o", "ck", "--resume", "--steps", "9", "--overwrite").exit_code == 0


def test_12_resume_continues_its_own_best(scene):
    assert run("train", "bottles.txt", "-o", "ck", "--resume", "--steps", "9").exit_code == 0
    assert checkpoint.read_meta("ck/latest.npz")["progress"]["step"] == 9


def test_stop_at_sends_nothing_unasked():
    """The harness of the signal tests runs charrnn as its console script does."""
    result = python(STOP_AT, "--", "--version")
    assert result.returncode == 0 and "charrnn" in result.stdout, result.stderr

"""Faults a careless or hostile user hits (issue 35's defects): conformance that can be fooled, claims
that block forever, half-written rebuilds, records that crash or lie, names that become markup or
paths, and usage errors that exit 0 or train first."""

import copy
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from record_factory import valid_record

from architectures.linear_attention import LinearAttention
from benchmarks import conformance, leaderboard, relabel, review
from benchmarks.conformance import check_mixer
from benchmarks.record import CorruptRecord, validate
from benchmarks.store import Store, group_key, load_record, run_key

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "results" / "default"  # 40 committed records: a store the page builds in seconds


# --- 1. conformance ties the operator to the forward ---------------------------------------------


class IdentityOperator(LinearAttention):
    """Reports the identity as its operator and offers nothing that ties it to its forward."""

    readout = None
    frozen = None

    def operator(self, x):
        op = super().operator(x)
        b, c, n = op.inputs.shape
        eye = torch.eye(n, dtype=x.dtype).expand(b, c, n, n)
        return type(op)(eye, op.inputs, op.inputs)


class IgnoresInput(LinearAttention):
    """Its output is the same whatever its input."""

    def forward(self, x):
        return super().forward(torch.ones_like(x))


class PeeksInEval(LinearAttention):
    """Honest in train mode; in eval mode each output also sees the next token."""

    def forward(self, x):
        y = super().forward(x)
        return y if self.training else y + x.roll(-1, dims=1)


def _failed(report) -> set[str]:
    return {c.name for c in report.failures()}


def test_an_identity_operator_with_nothing_tying_it_to_forward_fails_saying_what_to_add():
    report = check_mixer(IdentityOperator)
    assert {"mixes", "tied"} <= _failed(report), report.message()
    (tied,) = [c for c in report.failures() if c.name == "tied"]
    assert "add readout(outputs, x)" in tied.detail and "frozen(x)" in tied.detail and "linear_in_input" in tied.detail


def test_a_mixer_that_ignores_its_input_fails():
    assert "input" in _failed(check_mixer(IgnoresInput))


def test_a_mixer_that_peeks_ahead_only_in_eval_mode_fails():
    failed = _failed(check_mixer(PeeksInEval))
    assert "no lookahead (eval)" in failed and all(name.endswith("(eval)") for name in failed), failed


def test_reference_mixer_passes_the_new_checks_in_both_modes():
    report = check_mixer("gla")
    names = {c.name for c in report.checks}
    assert report.passed, report.message()
    assert {"input", "no lookahead", "mixes", "tied", "tied (eval)", "readout (eval)"} <= names


@pytest.mark.parametrize("args", [["arch=examples.gated_ema:GatedEMA"], ["architecture=nosuch"], ["lengths=3"]])
def test_conformance_refuses_unknown_keys_and_mixers(args, capsys):
    assert conformance.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("conformance: ") and "--help" in err and "\n" not in err.strip()


# --- 2. claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "garbage", "host"], ids=["empty", "unparsable", "one-field"])
def test_an_empty_or_unparsable_claim_is_taken_over(tmp_path, content):
    store = Store(tmp_path)
    store.records_dir.mkdir(parents=True)
    (store.records_dir / ".k.claim").write_text(content)
    with store.claim("k") as mine:
        assert mine
        host, pid, _ = (store.records_dir / ".k.claim").read_text().split(" ")
        assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert not list(store.records_dir.iterdir())  # released, no temporary file left


def test_a_claim_of_a_dead_process_is_taken_over_and_a_live_one_is_not(tmp_path):
    store = Store(tmp_path)
    store.records_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (store.records_dir / ".k.claim").write_text(f"{socket.gethostname()} {dead.stdout.strip()} 0")
    with store.claim("k") as mine:
        assert mine
        with store.claim("k") as again:  # this process is alive: its claim holds
            assert not again


# --- 3. atomic rebuilds ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A copy of a small committed store, built once."""
    root = tmp_path_factory.mktemp("store") / "s"
    shutil.copytree(SMALL, root)
    leaderboard.build(root)
    return root


def _outputs(root: Path) -> dict[str, bytes]:
    files = [root / n for n in ("index.html", "leaderboard.md", "leaderboard.csv")] + sorted((root / "figures").glob("*.png"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_a_rebuild_that_fails_midway_leaves_the_last_page_and_figures_whole(built, monkeypatch):
    before = _outputs(built)
    assert any(k.startswith("figures/") for k in before)

    def fail(*args, **kwargs):  # the first figure drawn: an old file gone here is gone before its new one exists
        assert all((built / k).exists() for k in before), "an old file is gone before the new ones exist"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(leaderboard.figures, "headline_figure", fail)
    with pytest.raises(OSError):
        leaderboard.build(built)
    assert _outputs(built) == before
    assert not list(built.glob(".leaderboard-*"))  # the staging directory is removed


def test_a_rebuild_during_a_rebuild_does_not_crash(built, monkeypatch):
    real = leaderboard.figures.ess_vs_tss
    calls = []

    def with_another_build(*args, **kwargs):
        out = real(*args, **kwargs)
        if not calls:
            calls.append(1)
            leaderboard.build(built)  # a second rebuild of the same store starts and finishes meanwhile
        return out

    monkeypatch.setattr(leaderboard.figures, "ess_vs_tss", with_another_build)
    paths = leaderboard.build(built)
    assert calls and all(p.exists() for p in paths)
    assert not list(built.glob(".leaderboard-*"))


# --- 4 and 6. records: missing fields, impossible values, copies, things that are not files -----


def _a_record() -> dict:
    return load_record(sorted((SMALL / "records").glob("*.json"))[0])


def _drop(record: dict, dotted: str) -> dict:
    out = copy.deepcopy(record)
    *parents, leaf = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    del node[leaf]
    return out


@pytest.mark.parametrize("field", ["metrics.tss", "metrics.ess", "metrics.task", "provenance", "config.train"])
def test_a_record_missing_a_field_is_set_aside_with_one_warning(tmp_path, capsys, field):
    record = _drop(_a_record(), field)
    store = Store(tmp_path)
    path = store.write(record)
    assert store.records() == []
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and field in err and "Traceback" not in err
    assert (store.corrupt_dir / path.name).exists() and store.corrupt_count() == 1


@pytest.mark.parametrize(
    "where, value",
    [
        ("accuracy", float("inf")),
        ("accuracy", float("nan")),
        ("accuracy", -3.0),
        ("val_accuracy", 1.5),
        ("accuracy", "0.9"),
        ("tss", -1),
        ("steps", 2.5),
    ],
)
def test_impossible_values_are_refused_by_the_type(where, value):
    record = valid_record()
    record["metrics"][where] = value
    with pytest.raises(CorruptRecord, match=f"metrics.{where}"):
        validate(record)


def test_infinity_in_a_file_is_set_aside_not_ranked_first(tmp_path, capsys):
    record = valid_record()
    store = Store(tmp_path)
    path = store.write(record)
    path.write_text(path.read_text().replace('"accuracy": 0.5', '"accuracy": Infinity'))
    assert store.records() == [] and "metrics.accuracy" in capsys.readouterr().err


def test_a_copy_under_another_file_name_counts_once(tmp_path, capsys):
    store = Store(tmp_path)
    path = store.write(valid_record())
    shutil.copy(path, store.records_dir / "0000000000000000.json")
    (kept,) = store.records()
    assert kept["key"] == path.stem
    assert "is not its file name" in capsys.readouterr().err and store.corrupt_count() == 1


@pytest.mark.parametrize("name", ["../../pwned", "<script>alert(1)</script>", "nosuch"])
def test_a_task_name_outside_the_registry_is_refused(name):
    record = valid_record()
    record["metrics"]["task"]["name"] = name
    with pytest.raises(CorruptRecord, match="unknown task"):
        validate(record)
    if name != "nosuch":  # and no figure is drawn under a name that is a path or markup
        with pytest.raises(ValueError, match="not a plain file name"):
            leaderboard.figures._save(None, Path("/nonexistent"), name, {})


def test_a_directory_a_symlink_loop_a_bad_throughput_record_and_a_cut_plan_do_not_stop_a_build(tmp_path, capsys):
    root = tmp_path / "s"
    shutil.copytree(SMALL, root)
    (root / "records" / "x.json").mkdir()
    loop = root / "records" / "loop.json"
    loop.symlink_to(loop)
    tp = Store(root / "throughput")
    tp.write({"key": "t1", "kind": "throughput", "status": "ok", "config": {}, "provenance": {"commit": "0", "device": "cpu"},
              "metrics": {"mixer": "lru"}})  # fmt: skip
    plan = root / "plans" / "default.json"
    plan.write_text(plan.read_text()[:50])
    paths = leaderboard.build(root)
    assert all(p.exists() for p in paths)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4, warnings
    for name in ("x.json", "loop.json", "t1.json", "default.json"):
        assert sum(name in w for w in warnings) == 1, name
    assert {p.name for p in (root / "records" / "corrupt").iterdir()} == {"x.json", "loop.json"}
    assert "Traceback" not in "\n".join(warnings)


def test_every_committed_record_validates():
    paths = [Path(p) for p in glob.glob(str(ROOT / "results" / "**" / "records" / "*.json"), recursive=True)]
    assert len(paths) > 1000
    bad = []
    for path in paths:
        try:
            load_record(path)
        except CorruptRecord as e:
            bad.append(f"{path}: {e}")
    assert not bad, bad[:5]


# --- 5. escaping ----------------------------------------------------------------------------------


def test_table_ids_and_record_links_are_escaped():
    df = pd.DataFrame({"record": ["<b>k</b>"], "accuracy": [0.5]})
    out = leaderboard.html_table(df, 'runs-"><script>x</script>', details=lambda i: "")
    assert "<script>" not in out and "<b>" not in out


def test_review_report_does_not_pass_run_errors_or_names_through_as_html(tmp_path):
    failed = valid_record(status="failed", error="<img src=x onerror=alert(1)>")
    del failed["metrics"]
    report = conformance.Report("<script>alert(2)</script>")
    paths = review.build_report("<script>alert(2)</script>", report, [failed], [], [], tmp_path, ["cmd"], "<i>ref</i>")
    page = paths[1].read_text()
    assert "<img src=x" not in page and "<script>alert" not in page and "<i>ref</i>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


# --- 7. relabel -----------------------------------------------------------------------------------


def _store_to_relabel(tmp_path) -> tuple[Path, list[Path]]:
    store = Store(tmp_path / "a")
    cfg = {**valid_record()["config"], "model": {"d_model": 16}}  # names no backbone
    return store.root, [store.write(valid_record(cfg))]


def test_relabel_refuses_an_empty_move_target_and_moves_nothing(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root, files = _store_to_relabel(tmp_path)
    assert relabel.main([str(root), "--backbone", "mad", "--move", "mqar="]) == 2
    assert "--move takes TASK=STORE" in capsys.readouterr().err
    assert all(f.exists() for f in files) and list(work.iterdir()) == []


def test_relabel_validates_every_record_before_moving_any(tmp_path, capsys):
    root, files = _store_to_relabel(tmp_path)
    (root / "records" / "zzzz.json").write_text('{"key": "zzzz"')
    assert relabel.main([str(root), "--backbone", "mad"]) == 2
    err = capsys.readouterr().err
    assert "nothing moved" in err and "zzzz.json" in err and "Traceback" not in err
    assert all(f.exists() for f in files)


# --- 8 and 9. paths and usage errors --------------------------------------------------------------


@pytest.mark.parametrize("entry", ["bench", "review"])
def test_a_preset_outside_conf_preset_is_refused(entry, tmp_path, capsys):
    from benchmarks import bench

    main = {"bench": bench.main, "review": review.main}[entry]
    with pytest.raises(SystemExit) as e:
        main(["preset=../../../../x", f"store={tmp_path}", "architecture=lru", f"out={tmp_path}"])
    assert e.value.code == 2 and "not a preset name" in capsys.readouterr().err
    assert not (tmp_path / "records").exists()


def test_review_with_bad_lengths_or_no_mixer_exits_2_before_training(tmp_path, monkeypatch, capsys):
    def no_training(*a, **k):
        raise AssertionError("trained before the usage error")

    monkeypatch.setattr(review, "run_one", no_training)
    monkeypatch.setattr(review, "check_mixer", no_training)
    assert review.main(["architecture=lru", "preset=smoke", f"out={tmp_path}", "lengths=abc"]) == 2
    assert "lengths='abc'" in capsys.readouterr().err
    assert review.main(["preset=smoke", f"out={tmp_path}"]) == 2
    assert "say which mixer" in capsys.readouterr().err


def test_leaderboard_help_and_missing_or_empty_stores(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        leaderboard.main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
    assert leaderboard.main([str(tmp_path / "nosuch")]) == 2
    (tmp_path / "empty" / "records").mkdir(parents=True)
    assert leaderboard.main([str(tmp_path / "empty")]) == 2
    assert "no records in" in capsys.readouterr().err
    assert not (tmp_path / "nosuch").exists() and not (tmp_path / "empty" / "index.html").exists()


def test_a_store_that_cannot_be_written_gives_one_line(tmp_path, monkeypatch, capsys):
    root = tmp_path / "s"
    Store(root).write(valid_record())

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(leaderboard.tempfile, "mkdtemp", read_only)
    assert leaderboard.main([str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("leaderboard: cannot build in") and "Permission denied" in err and "\n" not in err


def test_a_record_type_check_reads_as_json(tmp_path):
    """The record module keeps the record as written: what the page reads is the file's own dict."""
    record = valid_record()
    path = Store(tmp_path).write(record)
    assert load_record(path) == json.loads(json.dumps(record))


# --- 10. Ctrl-C with two workers ------------------------------------------------------------------


def _poll(until, seconds: float, every: float = 0.05) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if until():
            return True
        time.sleep(every)
    return False


def _in_a_terminal(args: list[str]) -> subprocess.Popen:
    """`python -m benchmarks.bench ARGS` started as a terminal starts a command: in a process group of its own
    (Ctrl-C reaches the whole group) with SIGINT at its default. A shell starts a background job with SIGINT
    ignored, and a sweep started so rightly ignores Ctrl-C: without the reset these tests would fail whenever
    pytest itself runs in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.e2e
@pytest.mark.parametrize("reaches", ["process group", "workers first"])
def test_ctrl_c_with_two_workers_starts_no_queued_group_and_says_how_to_resume(tmp_path, reaches):
    """Six one-rate groups in two workers: three of 4 steps, then three that never end (lr 1e-9, 100,000
    steps). Ctrl-C to the process group once the short ones are recorded and two long ones train: the
    sweep exits in seconds, non-zero, with one line; the third long group never starts, nothing more is
    recorded and no claim is left. Each group has a line as it starts and as it ends. `workers first`:
    the signal reaches the workers alone, as it may reach them before the sweep's own process (a
    worker's interrupted group then comes back to the sweep before its own Ctrl-C does)."""
    records = tmp_path / "records"
    args = [
        "preset=smoke", f"store={tmp_path}", "workers=2", "reference=", "train.steps=4,100000",
        "architecture=attention,lru,gla", "architecture.lr_grid=[1e-9]", "train.rungs=[2]", "train.schedule=wsd",
    ]  # fmt: skip
    sweep = _in_a_terminal(args)
    claims = lambda: {p.name for p in records.glob(".*.claim")}
    recorded = lambda: {f".{json.loads(p.read_text())['group']}.claim" for p in records.glob("*.json")}
    try:
        long_ones_train = lambda: len(done := recorded()) == 3 and len(claims() - done) == 2  # the short ones released
        assert _poll(long_ones_train, 120), "the short groups never landed"
        training = claims()
        if reaches == "process group":
            os.killpg(sweep.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        else:
            for pid in _children(sweep.pid):  # the workers (and the resource tracker, which ignores SIGINT)
                os.kill(pid, signal.SIGINT)
        seen = set(training)
        assert _poll(lambda: seen.update(claims()) or sweep.poll() is not None, 25), "still running 25 s after Ctrl-C"
        out, err = sweep.communicate()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.communicate()
    assert seen == training, f"a queued group started after Ctrl-C: {sorted(seen - training)}, {sorted(training)} training\n{out}"
    assert sweep.returncode == 130 and len(list(records.glob("*.json"))) == 3 and not claims()
    stopped = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(stopped) == 1 and "2 groups stopped" in stopped[0] and "1 not started" in stopped[0], err + out
    assert "same command resumes" in stopped[0] and "Traceback" not in err
    assert [line.split("]")[0] for line in out.splitlines() if line.startswith("[")] == ["[1/6", "[2/6", "[3/6"]
    assert sum(line.startswith("started ") for line in out.splitlines()) == 5, out


@pytest.mark.parametrize("handled_by", ["returning 130", "the sweep"])
def test_a_handled_ctrl_c_exits_130_even_when_it_landed_in_code_run_by_exec(tmp_path, handled_by):
    """Ctrl-C that lands while `exec` runs a string (a dataclass being built by a lazy import, say) and is
    handled: CPython still ends a `-m` process by SIGINT (status -2) unless the mark it leaves is cleared,
    which the sweep does; returning 130 alone does not (that side shows the interpreter has the flaw)."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "import sys\n"
        "try:\n"
        "    exec('raise KeyboardInterrupt')\n"
        "except KeyboardInterrupt:\n"
        "    if sys.argv[1] == 'the sweep':\n"
        "        from benchmarks.bench import _handled_ctrl_c\n"
        "        sys.exit(_handled_ctrl_c())\n"
        "    sys.exit(130)\n"
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ended = subprocess.run([sys.executable, "-m", "interrupted_in_exec", handled_by], cwd=tmp_path, env=env)
    assert ended.returncode == (130 if handled_by == "the sweep" else -signal.SIGINT)


@pytest.mark.e2e
def test_ctrl_c_with_one_worker_stops_the_group_it_trains_and_starts_no_other(tmp_path):
    """One worker (the sweep's own process), two groups that never end: Ctrl-C while the first trains
    exits 130 with one line (1 stopped, 1 not started), no record and no claim left."""
    records = tmp_path / "records"
    args = [
        "preset=smoke", f"store={tmp_path}", "workers=1", "reference=", "train.steps=100000", "architecture=attention,lru",
        "architecture.lr_grid=[1e-9]", "train.rungs=[2]", "train.schedule=wsd",
    ]  # fmt: skip
    sweep = _in_a_terminal(args)
    claims = lambda: list(records.glob(".*.claim"))
    try:
        assert _poll(lambda: len(claims()) == 1, 120), "the first group never started"
        os.killpg(sweep.pid, signal.SIGINT)
        assert _poll(lambda: sweep.poll() is not None, 25), "still running 25 s after Ctrl-C"
        out, err = sweep.communicate()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.communicate()
    assert sweep.returncode == 130 and not list(records.glob("*.json")) and not claims(), err
    stopped = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(stopped) == 1 and "1 group stopped" in stopped[0] and "1 not started" in stopped[0], err + out
    assert "Traceback" not in err


def test_a_model_under_two_protocols_in_one_store_is_named_by_the_build(tmp_path, capsys):
    """Every table would read both protocols' rows of one model as the leaderboard's: the build says so,
    on stderr and in the page's summary, naming the model."""
    root = tmp_path / "s"
    shutil.copytree(SMALL, root)
    store = Store(root)
    record = next(r for r in store.records() if r["config"]["architecture"]["name"] == "lru")
    again = copy.deepcopy(record)
    again["config"]["train"]["steps"] = record["config"]["train"]["steps"] * 2  # another budget: another protocol
    again["key"], again["group"] = run_key(again["config"]), group_key(again["config"])
    store.write(again)
    leaderboard.build(root)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "more than one protocol" in line]
    assert len(warnings) == 1 and "1 model trained" in warnings[0] and "lru" in warnings[0]
    page = (root / "leaderboard.md").read_text()
    assert "Trained under more than one protocol, so read twice by every table: 1 model (lru" in page
    assert "Trained under more than one protocol" not in (SMALL / "leaderboard.md").read_text()

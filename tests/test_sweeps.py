"""The harness under failure: killed sweeps, NaN runs, concurrent writers, reproducibility, launchers."""

import json
import multiprocessing as mp
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from architectures import registry
from benchmarks import bench
from benchmarks.run import run_one
from benchmarks.store import Store

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e  # processes, kills and launchers: nox -s e2e


def snapshot(store: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (store / "records").glob("*.json")}


def test_killed_sweep_resumes_without_recomputing_or_corrupting(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.bench", "preset=smoke", f"store={tmp_path}", "progress=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list((tmp_path / "records").glob("*.json")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # mid-sweep: at least one run done, others not
    finally:
        proc.wait()
    before = snapshot(tmp_path)
    assert 1 <= len(before) < 8
    assert bench.main(["preset=smoke", f"store={tmp_path}", "progress=false"]) == 0
    after = snapshot(tmp_path)
    assert len(after) == 8  # 4 mixers x 2 learning rates
    for name, (mtime, content) in before.items():  # finished runs were neither recomputed nor rewritten
        assert after[name] == (mtime, content)
    for record in Store(tmp_path).records():
        assert record["status"] == "ok"


def test_killed_parallel_sweep_leaves_no_worker_running(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.bench", "preset=smoke", f"store={tmp_path}", "progress=false", "workers=2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list((tmp_path / "records").glob("*.json")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    time.sleep(1.0)  # a worker finishing the run it was in may still write that one record
    before = snapshot(tmp_path)
    time.sleep(8.0)  # orphaned workers would go on through the queued runs (about a second each)
    assert snapshot(tmp_path) == before
    assert len(before) < 8


def test_nan_run_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    overrides = [
        "preset=smoke",
        f"store={tmp_path}",
        "progress=false",
        "architecture=attention",
        "architecture.name=nan_mixer:NaNMixer,attention",
    ]
    assert bench.main(overrides) == 0
    records = Store(tmp_path).records()
    assert len(records) == 4  # 2 mixers x 2 learning rates, every one recorded
    for r in records:
        if r["config"]["architecture"]["name"] == "nan_mixer:NaNMixer":
            assert r["status"] == "failed" and "nan" in r["error"].lower()
        else:
            assert r["status"] == "ok"
    assert "Failed runs" in (tmp_path / "leaderboard.md").read_text()
    assert not (tmp_path / "plans").exists()  # a narrowed sweep is not its preset: it plans no coverage


def _write_many(root: str, worker: int, n: int) -> None:
    store = Store(root)
    for i in range(n):
        # both workers write the shared keys too: last writer wins, never a torn file
        store.write({"key": f"shared{i % 5}", "worker": worker, "payload": "x" * 20000})
        store.write({"key": f"w{worker}-{i}", "worker": worker, "payload": "y" * 20000})


def test_concurrent_writers_leave_every_record_intact(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), w, 40)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = list((tmp_path / "records").glob("*.json"))
    assert len(files) == 5 + 80
    for f in files:
        record = json.loads(f.read_text())  # every file parses: none torn
        assert len(record["payload"]) == 20000
    assert not [p for p in (tmp_path / "records").iterdir() if p.suffix == ".tmp"]


def test_rerunning_a_record_reproduces_accuracy_and_ess(tmp_path):
    assert (
        bench.main(
            ["preset=smoke", f"store={tmp_path / 'a'}", "progress=false", "architecture=mamba", "architecture.lr_grid=[3e-3]"]
        )
        == 0
    )
    (original,) = Store(tmp_path / "a").records()
    cfg = dict(original["config"], store=str(tmp_path / "b"))
    again = run_one(cfg)
    assert again["key"] == original["key"]
    assert again["metrics"]["accuracy"] == original["metrics"]["accuracy"]
    assert again["metrics"]["ess"]["ess_curve"] == original["metrics"]["ess"]["ess_curve"]
    assert again["metrics"]["ess"]["entropy_ess_mean"] == pytest.approx(original["metrics"]["ess"]["entropy_ess_mean"], rel=1e-6)


@pytest.mark.parametrize(
    "launcher, target",
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
        ("ray", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
    ],
)
def test_launcher_configs_load(launcher, target):
    plugin = target.split(".")[1]
    pytest.importorskip(f"hydra_plugins.{plugin}", reason=f"install the `distributed` extra for the {launcher} launcher")
    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        cfg = compose("config", overrides=["preset=default", f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    assert "architecture" in cfg.hydra.sweeper.params  # the same sweep goes to any launcher


def test_a_sweep_process_loads_all_its_code_before_it_records_provenance():
    # the registry imports a mixer at its first use; a sweep imports them all when it starts, so a
    # record's commit names the code that ran even if the tree changes while the sweep runs
    import subprocess
    import sys

    code = (
        "import sys; from benchmarks import bench, provenance; bench.load_code(); "
        "from architectures import registry; "
        "print(all(registry._REFERENCE[n].split(':')[0] in sys.modules for n in registry._REFERENCE), "
        "provenance.git_state.cache_info().currsize)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.split() == ["True", "1"]


def test_published_presets_plan_what_the_readme_says():
    """The published sweeps: every mixer at two state sizes (attention once) x 6 MQAR settings x the 4
    rates of the converged protocol's grid; MAD's three tasks at two levels; and seed replicates of
    published designs only. Every MQAR preset searches its grid by successive halving on fresh data."""
    from benchmarks.config import single_run
    from benchmarks.store import design_key

    counts, designs = {}, {}
    for preset in ("published", "published_mad", "published_seeds"):
        configs = bench.plan([f"preset={preset}"])
        counts[preset] = len(configs)
        designs[preset] = {design_key(single_run(c)) for c in configs}
        assert {c["store"] for c in configs} == {"results"}
    assert counts == {
        "published": 14 * 2 * 6 * 4 - 6 * 4, "published_mad": (3 * 2 * 2 * 14 - 3 * 2) * 4, "published_seeds": 13 * 3 * 2 * 4
    }
    family = bench.plan(["preset=state_family"])  # the ESS paper's test: four sizes per family, three settings
    assert len(family) == 4 * 4 * 3 * 4 and {c["store"] for c in family} == {"results"}
    sizes = {}
    for c in family:
        sizes.setdefault(c["architecture"]["name"], set()).add(design_key(single_run(c)))
    assert {m: len(d) for m, d in sizes.items()} == dict.fromkeys(["gla", "wla", "linear_attention", "sliding_window"], 4 * 3)
    assert len({design_key(single_run(c)) for c in family} & designs["published"]) == 4 * 2 * 3  # its state=0,1 are published's
    converged = ("published", "published_ladder", "published_ladder_l256", "published_ladder_top", "published_seeds",
                 "state_family")  # fmt: skip
    for preset in converged:
        trains = {(c["train"]["schedule"], tuple(c["train"]["rungs"]), c["data"]["num_train"])
                  for c in bench.plan([f"preset={preset}"])}  # fmt: skip
        assert trains == {("wsd", (1000, 4000), None)}, preset
    mad = {(c["train"]["schedule"], tuple(c["train"]["rungs"]), c["train"]["solved_accuracy"], c["data"]["num_train"])
           for c in bench.plan(["preset=published_mad"])}  # fmt: skip
    assert mad == {("wsd", (1000, 4000), 0.999, 12800)}  # converged, with MAD's stop and MAD's training set
    assert designs["published_seeds"] <= designs["published"]
    # MQAR in Zoology's model, MAD in MAD's; the ablation's middle column in its own store
    presets = ("published", "published_ladder", "published_seeds", "published_mad", "ablation_backbone", "default")
    backbones = {p: {c["model"]["backbone"] for c in bench.plan([f"preset={p}"])} for p in presets}
    assert backbones == {"published": {"zoology"}, "published_ladder": {"zoology"}, "published_seeds": {"zoology"},
                         "published_mad": {"mad"}, "ablation_backbone": {"conv_mlp"}, "default": {"zoology"}}  # fmt: skip
    ladder = {(c["task"]["seq_len"], c["task"]["num_kv_pairs"]) for c in bench.plan(["preset=published_ladder"])}
    assert ladder == {(128, 32)}  # the rungs above: tests/test_ladder.py
    top = bench.plan(["preset=published_ladder_top"])
    assert {(c["task"]["seq_len"], c["task"]["num_kv_pairs"], c["task"]["vocab_size"]) for c in top} == {(512, 128, 1024)}
    assert len(top) == 12 and {c["architecture"]["name"] for c in top} == {"attention", "based"}
    assert {c["store"] for c in top} == {"results"} and {c["model"]["backbone"] for c in top} == {"zoology"}
    seeds = {c["seed"] for c in bench.plan(["preset=published_seeds"])}
    assert seeds == {1, 2}
    # conv_mlp builds a mixer with its own convolution as mad does: those are not trained twice
    ablation = bench.plan(["preset=ablation_backbone"])
    own = {m for m in registry.names() if getattr(registry.resolve(m), "short_conv", False)}
    assert own == {"mamba", "mamba2", "hyena", "h3", "deltanet", "gated_deltanet"}
    assert {c["architecture"]["name"] for c in ablation} == set(registry.names()) - own


def test_the_gpu_preset_trains_every_mixer_under_the_converged_protocol():
    """`full`, the Zoology-scale sweep for GPUs: every registered mixer (not a list of its own), the whole
    ladder, four widths, three seeds, each group's rate searched by successive halving on fresh data."""
    configs = bench.plan(["preset=full"])
    assert {c["architecture"]["name"] for c in configs} == set(registry.reference_names())
    assert len(configs) == len(registry.reference_names()) * 6 * 4 * 3 * 4
    protocol = {(c["train"]["schedule"], tuple(c["train"]["rungs"]), c["data"]["num_train"]) for c in configs}
    assert protocol == {("wsd", (1000, 4000), None)}
    assert {c["train"]["lr"] for c in configs} == {1e-4, 4.6e-4, 2.2e-3, 1e-2}  # Zoology's logspace(-4, -2, 4)
    assert len({(c["task"]["seq_len"], c["task"]["num_kv_pairs"]) for c in configs}) == 6


def test_a_narrowed_sweep_plans_a_disjoint_part_of_its_preset_under_the_same_keys():
    """Two processes sharing a preset by task (the README's way) must plan the preset's own runs, with
    its record keys, and between them all of it: else one would redo or miss the other's records."""
    from benchmarks.config import single_run
    from benchmarks.store import run_key

    def keys(*overrides):
        return [run_key(single_run(c)) for c in bench.plan(["preset=published_mad", *overrides])]

    whole = keys()
    copying, others = keys("task=selective_copying"), keys("task=compression,in_context_recall")
    assert not set(copying) & set(others)
    assert sorted(copying + others) == sorted(whole)


def test_a_relabelled_record_is_the_run_its_new_threshold_makes(tmp_path):
    """benchmarks.relabel carries a record to a new `train.solved_accuracy` only where neither
    threshold stopped it: the carried record must equal a fresh run of the new config, and a run
    the threshold did stop must stay where it was, to be run again."""
    from benchmarks.relabel import relabel

    store = Store(tmp_path / "a")
    narrow = ["preset=smoke", f"store={store.root}", "progress=false", "architecture=mamba", "architecture.lr_grid=[3e-3]"]
    assert bench.main(narrow) == 0  # 30 steps: validation stays far below 0.99
    (unstopped,) = store.records()
    assert max(h["val_accuracy"] for h in unstopped["metrics"]["history"]) < 0.99
    assert bench.main([*narrow, "train.solved_accuracy=1e-9"]) == 0  # stopped at its first evaluation
    (stopped,) = [r for r in store.records() if r["key"] != unstopped["key"]]
    assert stopped["metrics"]["stopped"] == "solved"

    assert relabel(store, [unstopped["key"], stopped["key"]], 0.995) == (1, 1)
    assert store.exists(stopped["key"]) and not store.exists(unstopped["key"])
    (moved,) = [r for r in store.records() if r.get("relabelled")]
    assert moved["relabelled"]["from_key"] == unstopped["key"]

    train = {**unstopped["config"]["train"], "solved_accuracy": 0.995}
    fresh = run_one(dict(unstopped["config"], store=str(tmp_path / "b"), train=train))
    assert (fresh["key"], fresh["group"]) == (moved["key"], moved["group"])
    assert fresh["metrics"]["history"] == moved["metrics"]["history"]
    assert fresh["metrics"]["accuracy"] == moved["metrics"]["accuracy"]


def test_a_joblib_launcher_sweep_writes_the_records_the_sweep_driver_plans(tmp_path):
    """The README's parallel route: `benchmarks.run -m ... hydra/launcher=joblib` must train every run
    that `benchmarks.bench` plans for the same sweep, under the same record keys, in parallel jobs."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="install the `distributed` extra")
    from benchmarks.config import single_run
    from benchmarks.store import run_key

    store = tmp_path / "store"
    narrow = ["preset=smoke", "architecture=attention,lru"]
    cmd = [
        sys.executable, "-m", "benchmarks.run", "-m", *narrow, "train.lr=0.001,0.003", f"store={store}", "progress=false",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    planned = {run_key(single_run(c)) for c in bench.plan([*narrow, f"store={store}"])}
    records = Store(store).records()
    assert {r["key"] for r in records} == planned and len(planned) == 4
    assert all(r["status"] == "ok" for r in records)


def test_relabel_refuses_a_threshold_its_preset_does_not_plan_and_writes_nothing(tmp_path, capsys):
    from benchmarks import relabel

    assert relabel.main([str(tmp_path), "published", "--solved-accuracy", "0.995"]) == 2  # no plan to read keys from
    plan = tmp_path / "plans" / "published.json"
    plan.parent.mkdir()
    plan.write_text('{"keys": []}')
    assert relabel.main([str(tmp_path), "published", "--solved-accuracy", "0.9"]) == 2  # the preset stops at 0.995
    assert "change the preset first" in capsys.readouterr().err
    assert plan.read_text() == '{"keys": []}'
    assert relabel.main([str(tmp_path), "published", "--solved-accuracy", "0.995"]) == 0
    # rewritten: the preset's plan now (attention: one state)
    assert len(json.loads(plan.read_text())["keys"]) == 14 * 2 * 6 * 4 - 6 * 4

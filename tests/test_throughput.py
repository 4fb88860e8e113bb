"""Throughput measurement: helpers on functions of known cost, scaling exponents, fallbacks."""

import math
import os

import pytest
import torch

from architectures import kernels
from benchmarks import throughput
from benchmarks.store import Store


class FakeClock:
    """A clock that only the measured function advances: costs are exact, not timed."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_measure_reports_the_median_of_known_costs_after_warmup():
    clock = FakeClock()
    costs = iter([100.0, 100.0, 0.3, 0.1, 0.2, 0.5, 0.4])  # two warm-up calls, then five timed

    def fn():
        clock.now += next(costs)

    timing = throughput.measure(fn, warmup=2, repeats=5, clock=clock)
    assert timing.times_s == pytest.approx([0.3, 0.1, 0.2, 0.5, 0.4])
    assert timing.median_s == pytest.approx(0.3)


def test_measure_takes_more_samples_of_short_calls():
    clock = FakeClock()

    def fn():
        clock.now += 0.125  # exact in binary: the sums are exact

    assert len(throughput.measure(fn, warmup=0, repeats=3, clock=clock, min_time_s=1.0).times_s) == 8
    assert len(throughput.measure(fn, warmup=0, repeats=3, clock=clock, min_time_s=1.0, max_repeats=6).times_s) == 6
    assert len(throughput.measure(fn, warmup=0, repeats=20, clock=clock, min_time_s=1.0).times_s) == 20


def test_measure_rejects_bad_repeats():
    with pytest.raises(ValueError, match="repeats"):
        throughput.measure(lambda: None, repeats=0)


@pytest.mark.parametrize("exponent", [1.0, 2.0, 1.5])
def test_scaling_exponent_recovers_a_power_law(exponent):
    lengths = [128, 256, 512, 1024]
    times = [3e-6 * n**exponent for n in lengths]
    assert throughput.scaling_exponent(lengths, times) == pytest.approx(exponent)


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
     ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce RTX 3060", None)],
)  # fmt: skip
def test_device_peak_matches_the_most_specific_name(name, peak):
    assert throughput.peak_bf16_flops(name) == peak


def test_flop_counter_counts_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert throughput._flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_model_flops_credit_every_kernel_path_with_the_reference_work():
    """Softmax attention at batch 1, one head: QK^T and PV are 2 * L^2 * d FLOPs each, the qkv and
    output projections 2 * L * d * 3d and 2 * L * d * d; SDPA's CPU kernel, which the counter cannot
    see, is credited with the same."""
    from architectures import registry

    d, length = 16, 32
    expected = 2 * (2 * length**2 * d) + 2 * length * d * 3 * d + 2 * length * d * d
    for kernel in ("auto", "reference"):
        mixer = registry.build("attention", d_model=d, kernel=kernel)
        flops, counted_on = throughput.model_flops(mixer, torch.randn(1, length, d))
        assert (flops, counted_on) == (expected, "reference path")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
def test_cpu_peak_memory_of_a_known_allocation():
    """A call that fills 64 MiB at its peak (and frees it) reads as 64 MiB over what is held,
    also when an earlier, larger call left freed pages behind."""
    mib = 2**20

    def fill(n_mib):
        return lambda: torch.ones(n_mib * mib // 4).sum()

    throughput.peak_memory(torch.device("cpu"), fill(256), held=0)  # leaves freed heap behind
    peak, kind = throughput.peak_memory(torch.device("cpu"), fill(64), held=10 * mib)
    assert kind == "held tensors + peak RSS increase"
    assert 73 * mib <= peak <= 80 * mib, peak / mib
    peak, _ = throughput.peak_memory(torch.device("cpu"), lambda: None, held=0)
    assert peak < 4 * mib, peak / mib


def test_measured_scaling_attention_quadratic_recurrence_linear():
    """Real timings on this CPU: softmax attention's materialised path grows ~L^2, the LRU's scan ~L."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores + 0.5:  # other processes share the cores: their bursts, not L, would set the exponent
        pytest.skip(f"machine busy (load {load:.1f} on {cores} cores): timings would not measure scaling")
    lengths = [1024, 2048, 4096]
    exps = {}
    for name, kernel in (("attention", "reference"), ("lru", "auto")):
        times = []
        for n in lengths:
            mixer = throughput.registry.build(name, d_model=32, kernel=kernel)
            x = torch.randn(1, n, 32)
            with torch.no_grad():
                times.append(throughput.measure(lambda m=mixer, x=x: m(x), warmup=1, repeats=3, min_time_s=0.1).median_s)
        exps[name] = throughput.scaling_exponent(lengths, times)
    assert exps["attention"] > 1.6, exps
    assert exps["lru"] < 1.4, exps


def test_missing_kernels_fall_back_and_the_record_says_so(tmp_path):
    records = throughput.run(["mamba", "attention"], [32], str(tmp_path), torch.device("cpu"), repeats=1)
    for r in records:
        assert r["status"] == "ok", r.get("error")
        m = r["metrics"]
        assert m["kernel"] in ("reference", "sdpa", "s6-cpu")  # s6-cpu: the compiled CPU scan, CUDA kernels absent
        assert "no CUDA" in m["fallback"]
        assert m["forward_tokens_per_s"] > 0 and m["decode_tokens_per_s"] > 0 and m["peak_memory_bytes"] > 0
        assert m["forward_flops"] > 0
    assert len(Store(tmp_path / "throughput").records()) == 2


def test_use_fast_never_probes_off_cuda_and_rejects_forced_fast():
    called = []
    assert not kernels.use_fast("x", "auto", torch.device("cpu"), lambda d: called.append(d) or True)
    assert not called
    with pytest.raises(RuntimeError, match="not CUDA"):
        kernels.use_fast("x", "fast", torch.device("cpu"), lambda d: True)


def test_failing_probe_falls_back(monkeypatch):
    monkeypatch.setattr(kernels, "_verdicts", {})

    def broken(device):
        raise ImportError("no such kernel")

    with pytest.warns(UserWarning, match="reference path"):
        assert not kernels.use_fast("y", "auto", torch.device("cuda", 0), broken)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["mixers=foo"], "known mixers: attention"),
        (["lengths=128,abc"], "comma-separated integers"),
        (["batch=0"], "batch='0': every value must be >= 1"),
        (["kernel=fastest"], "choose one of"),
        (["kernel=fast", "device=cpu"], "CUDA only"),
        (["colour=blue"], "unknown argument(s) ['colour']"),
        (["lengths"], "arguments are key=value"),
    ],
)
def test_cli_rejects_bad_input_with_one_clear_line(argv, says, tmp_path, capsys):
    assert throughput.main([*argv, f"store={tmp_path}"]) == 2  # as every other command's bad input
    err = capsys.readouterr().err
    assert err.startswith("configuration error: ") and says in err
    assert not (tmp_path / "throughput").exists()  # nothing measured, nothing written


def test_cli_force_remeasures(tmp_path, monkeypatch):
    calls = []
    measure_mixer = throughput.measure_mixer
    monkeypatch.setattr(throughput, "measure_mixer", lambda *a, **k: calls.append(a) or measure_mixer(*a, **k))
    argv = ["mixers=lru", "lengths=16", "repeats=1", "batch=1", f"store={tmp_path}"]
    throughput.main(argv)
    throughput.main(argv)  # already measured: the record is kept
    assert len(calls) == 1
    throughput.main([*argv, "force=true"])
    assert len(calls) == 2 and len(Store(tmp_path / "throughput").records()) == 1
    assert Store(tmp_path / "throughput").records()[0]["measured_at"].endswith("+00:00")  # when, for the page's latest


def test_cpu_throughput_runs_under_the_allocator_setting_training_uses(monkeypatch):
    """Training sets malloc to keep freed memory (`benchmarks.train.keep_freed_memory`); the throughput
    of a CPU mixer must be timed under the same setting, whichever process measures it first."""
    applied = []
    monkeypatch.setattr(throughput, "keep_freed_memory", lambda: applied.append(True) or True)
    throughput.measure_mixer("lru", 16, torch.device("cpu"), d_model=8, batch=1, repeats=1, decode_steps=1)
    assert applied


def test_a_new_measurement_supersedes_the_old_one_on_the_page():
    """Re-measuring a mixer at new code writes a second record; the tables must show the latest only
    (two rows of one shape, 2x apart, would read as noise), older records without a time lose to it,
    and shapes measured once keep their row."""

    def record(length, tok_s, when=None):
        metrics = {
            "mixer": "lru",
            "seq_len": length,
            "batch": 4,
            "kernel": "reference",
            "forward_tokens_per_s": tok_s,
            "forward_backward_tokens_per_s": tok_s,
            "prefill_tokens_per_s": tok_s,
            "decode_tokens_per_s": tok_s,
            "forward_s": 1.0,
            "peak_memory_bytes": 0,
            "forward_flops_per_s": 0.0,
        }
        r = {"status": "ok", "metrics": metrics, "provenance": {"device": "cpu", "commit": "abc"}}
        return {**r, "measured_at": when} if when else r  # fmt: skip

    tp = throughput.throughput_rows([
        record(128, 1.0), record(128, 2.0, "2026-11-24T10:00:00+00:00"), record(128, 3.0, "2026-11-24T11:00:00+00:00"),
        record(256, 5.0),
    ])  # fmt: skip
    assert tp.set_index("L")["forward tok/s"].to_dict() == {128: 3.0, 256: 5.0}


def test_leaderboard_takes_the_throughput_of_the_kernel_the_run_used():
    import pandas as pd

    from benchmarks.leaderboard import _nearest_throughput

    tp = pd.DataFrame(
        [
            {"mixer": "attention", "device": "cpu", "kernel": "reference", "L": 128, "forward tok/s": 10.0},
            {"mixer": "attention", "device": "cpu", "kernel": "sdpa", "L": 128, "forward tok/s": 30.0},
            {"mixer": "attention", "device": "cpu", "kernel": "sdpa", "L": 1024, "forward tok/s": 20.0},
        ]
    )
    assert _nearest_throughput(tp, "attention", "cpu", 64, ["sdpa"]) == 30.0
    assert _nearest_throughput(tp, "attention", "cpu", 64, ["reference"]) == 10.0
    assert _nearest_throughput(tp, "attention", "cpu", 900, ["sdpa"]) == 20.0
    assert _nearest_throughput(tp, "attention", "cpu", 64, ["flash-attn"]) in (10.0, 30.0)  # not measured: any
    assert math.isnan(_nearest_throughput(tp, "attention", "cuda", 64, ["sdpa"]))  # no row on that device

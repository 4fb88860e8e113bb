"""ESS cost of a whole model (pytest-benchmark; `nox -s perf -- -k model_ess`): `model_ess` on 4
examples, both kinds (tolerance, entropy, and the tolerances that measure use), every split, of the
2-layer model the harness trains, at d_model 128 and L 256 for every mixer, and attention at d_model
256 and L 512. Targets: within 30 s per mixer, and 120 s for the larger attention. About a minute
in all on the 2-core CPU, most of it Hyena's and Mamba's; `-k` picks mixers."""

import pytest
import torch

from architectures import registry
from architectures.backbone import LanguageModel
from benchmarks.ess import model_ess

THREADS = 2


def _model(name: str, d_model: int, length: int) -> tuple[LanguageModel, torch.Tensor]:
    torch.manual_seed(0)
    model = LanguageModel(256, name, d_model=d_model, n_layers=2, seq_len=length)
    return model, torch.randint(0, 256, (4, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", registry.names())
def test_model_ess_d128_L256(benchmark, name):
    torch.set_num_threads(THREADS)
    model, tokens = _model(name, 128, 256)
    benchmark.group = "model_ess d_model 128 L 256"
    benchmark.pedantic(model_ess, args=(model, tokens), rounds=1, iterations=1)
    benchmark.extra_info.update(target_s=30, threads=THREADS)


def test_model_ess_attention_d256_L512(benchmark):
    torch.set_num_threads(THREADS)
    model, tokens = _model("attention", 256, 512)
    benchmark.group = "model_ess attention d_model 256 L 512"
    benchmark.pedantic(model_ess, args=(model, tokens), rounds=1, iterations=1)
    benchmark.extra_info.update(target_s=120, threads=THREADS)

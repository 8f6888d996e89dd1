"""SAELens and molab read each other's SAE files (molab/audit/sae.py) and SAELens trains on
molab's cache (scripts/saelens_train.py). SAELens runs in its own env, .venv-saelens
(`bash scripts/saelens-env.sh`); without it these tests skip."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from molab.audit.sae import SAE, load_sae
from molab.audit.sae_train import jumprelu_thresholds
from molab.bench.sae import synthetic_cache

ROOT = Path(__file__).resolve().parents[1]
SAELENS_PYTHON = ROOT / ".venv-saelens" / "bin" / "python"
POINT = "layers.1.resid_post"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAELENS_PYTHON.exists(), reason="no .venv-saelens (bash scripts/saelens-env.sh)"),
]

# Run by SAELens' python: load an SAE folder through SAELens' public API, encode and decode.
ENCODE = """
import sys, torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE
sae = SAE.load_from_disk(sys.argv[1])
x = load_file(sys.argv[2])["x"]
with torch.no_grad():
    f = sae.encode(x)
    save_file({"f": f.contiguous(), "x_hat": sae.decode(f).contiguous()}, sys.argv[3])
print(type(sae).__name__)
"""


def saelens_encode(folder: Path, x: torch.Tensor, tmp: Path) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(SAELens' class for the folder, its activations of x, its reconstruction)."""
    save_file({"x": x.contiguous()}, tmp / "x.safetensors")
    run = subprocess.run(
        [SAELENS_PYTHON, "-c", ENCODE, folder, tmp / "x.safetensors", tmp / "out.safetensors"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = load_file(tmp / "out.safetensors")
    return run.stdout.strip().splitlines()[-1], out["f"], out["x_hat"]


def test_saelens_loads_a_molab_sae_with_per_latent_thresholds(tmp_path):
    g = torch.Generator().manual_seed(0)
    sae = SAE(32, 128, architecture="topk", k=6, hook_name=POINT, model_name="tiny")
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g) / 4)
    theta, _ = jumprelu_thresholds(sae, torch.randn(4096, 32, generator=g).split(1024), 6, batch=False)
    sae.architecture = "jumprelu"
    sae.threshold.copy_(theta)
    sae.metadata = {"trainer": "molab", "trained_as": "topk"}
    sae.save(tmp_path / "sae")
    assert len(load_file(tmp_path / "sae" / "sae_weights.safetensors")["threshold"].unique()) > 100

    x = torch.randn(512, 32, generator=g)
    name, f, x_hat = saelens_encode(tmp_path / "sae", x, tmp_path)
    with torch.no_grad():
        ours = sae.encode(x)
        assert name == "JumpReLUSAE" and 2 < float((ours > 0).sum(-1).float().mean()) < 12
        assert torch.equal(f > 0, ours > 0)
        assert (f - ours).abs().max() < 1e-5 and (x_hat - sae.decode(ours)).abs().max() < 1e-5
    assert load_sae(tmp_path / "sae").metadata["trained_as"] == "topk"  # molab still reads its own


def test_saelens_trains_on_a_molab_cache_and_molab_loads_the_result(tmp_path):
    acts = torch.randn(12_288, 32, generator=torch.Generator().manual_seed(1))
    cache = synthetic_cache(tmp_path / "cache", POINT, acts, shard_tokens=2048)
    run = subprocess.run(
        [SAELENS_PYTHON, ROOT / "scripts" / "saelens_train.py", "--cache", cache.path, "--d-sae", "128"]
        + ["--k", "4", "--tokens", "4096", "--batch-size", "1024", "--threads", "1"]
        + ["--out", tmp_path / "sae"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["tokens"] == 4096 and result["tokens_per_second"] > 0
    assert result["peak_rss_mib"] >= result["rss_before_mib"] > 0

    sae = load_sae(tmp_path / "sae", hook_name=POINT)  # trained from tensors: no hook point in its cfg
    assert (sae.architecture, sae.d_in, sae.d_sae, sae.hook_name) == ("jumprelu", 32, 128, POINT)
    x = acts[:512]
    name, f, x_hat = saelens_encode(tmp_path / "sae", x, tmp_path)
    with torch.no_grad():
        ours = sae.encode(x)
        assert name == "JumpReLUSAE" and torch.equal(f > 0, ours > 0) and (ours > 0).any()
        assert (f - ours).abs().max() < 1e-5 and (x_hat - sae.decode(ours)).abs().max() < 1e-5

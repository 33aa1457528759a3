"""The CUDA path (issue 6): training and prediction on a GPU in bf16, and nccl under torchrun.

Skipped where torch sees no CUDA device (CI and the development machines); run with
`make test-gpu` on a machine that has one (docs/training.md, "GPUs").
"""

import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from test_distributed import CONFIG, assert_same_training, run_torchrun, torchrun

import pfn
from pfn import PFNClassifier, PFNRegressor
from pfn.checkpoint import load_state
from pfn.config import load_config
from pfn.heads import BarDistribution
from pfn.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def bf16_file(tmp_path):
    path = tmp_path / "tiny-bf16.toml"
    path.write_text(CONFIG.replace('precision = "fp32"', 'precision = "bf16"'))
    return path


def test_fp32_training_on_the_gpu_matches_the_cpu(tmp_path, config_file):
    config = load_config(config_file)
    train(config, tmp_path / "cpu", progress=False)
    train(config, tmp_path / "gpu", device="cuda", progress=False)
    # other kernels, other summation orders: on the CPU, 1 against 2 threads already differ by up
    # to 6e-6 after these 6 steps (measured on the development machine), so 5x the CPU tests' tolerance
    assert_same_training(tmp_path / "cpu", tmp_path / "gpu", rtol=5e-4, atol=5e-5)
    _, state = load_state(tmp_path / "gpu" / "state.safetensors")
    assert "gpu" in state["hardware"]


def test_bf16_training_on_the_gpu_writes_a_model_that_loads_on_the_cpu(tmp_path, bf16_file):
    state = train(load_config(bf16_file), tmp_path / "run", device="cuda", progress=False)
    assert state.precision == "bf16"
    assert all(torch.isfinite(torch.tensor(loss)) for *_, loss in state.curve)
    model = pfn.load(tmp_path / "run")
    assert model.device.type == "cpu"
    x = torch.rand(20, 3)
    assert torch.isfinite(model.predict(x[:15], x[:15].sum(1), x[15:]).mean()).all()


def test_bf16_prediction_on_the_gpu_is_close_to_fp32_on_the_cpu():
    cpu, gpu = pfn.load("gp"), pfn.load("gp").to("cuda")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 60, cpu.config.n_features, generator=generator)  # [B, N, F]
    y = torch.sin(6 * x[..., 0]) + 0.1 * torch.randn(8, 60, generator=generator)  # [B, N]
    a, b = cpu.predict(x[:, :40], y[:, :40], x[:, 40:]), gpu.predict(x[:, :40], y[:, :40], x[:, 40:])
    assert b.mean().device.type == "cuda"
    shift = (b.mean().cpu() - a.mean()).abs() / a.variance().sqrt()  # [B, m], in predictive sds
    # bf16 matmuls with fp32 sums, emulated by CPU autocast over 8 seeds of this data: median
    # shift 0.016-0.022 sd, largest 0.08-0.14 sd, NLL within 0.01 nats of fp32
    assert shift.median() < 0.05 and shift.max() < 0.3
    nll_cpu, nll_gpu = a.nll(y[:, 40:]).mean(), b.nll(y[:, 40:].cuda()).mean().cpu()
    assert abs(nll_gpu - nll_cpu) < 0.05


def test_a_gpu_distribution_draws_on_the_gpu_what_the_cpu_draws_from_the_same_cpu_generator():
    logits = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))  # [3, K]
    borders = torch.linspace(-2, 2, 17)  # [K + 1]
    cpu = BarDistribution(borders, logits, (0.5, 0.5))
    gpu = BarDistribution(borders.cuda(), logits.cuda(), (0.5, 0.5))
    a = cpu.sample(1000, torch.Generator().manual_seed(1))  # [n, 3]
    b = gpu.sample(1000, torch.Generator().manual_seed(1))
    assert b.device.type == "cuda"
    torch.testing.assert_close(b.cpu(), a)
    assert gpu.sample(10).device.type == "cuda"  # no generator: torch's default one on the GPU


def test_estimators_on_the_gpu_agree_with_the_cpu():
    x, y = load_breast_cancer(return_X_y=True)
    cpu = PFNClassifier(device="cpu", random_state=0).fit(x[:300], y[:300])
    gpu = PFNClassifier(device="cuda", random_state=0).fit(x[:300], y[:300])
    assert gpu.pfn_.device.type == "cuda"
    p_cpu, p_gpu = cpu.predict_proba(x[300:]), gpu.predict_proba(x[300:])
    assert abs(p_cpu - p_gpu).max() < 0.05
    assert (cpu.predict(x[300:]) == gpu.predict(x[300:])).mean() > 0.98

    x, y = load_diabetes(return_X_y=True)
    cpu = PFNRegressor(device="cpu", random_state=0).fit(x[:300], y[:300])
    gpu = PFNRegressor(device="cuda", random_state=0).fit(x[:300], y[:300])
    assert abs(cpu.predict(x[300:]) - gpu.predict(x[300:])).max() < 0.05 * y.std()


def test_nccl_under_torchrun_matches_one_process(tmp_path, config_file):
    processes = min(torch.cuda.device_count(), 2)
    train(load_config(config_file), tmp_path / "one", device="cuda", progress=False)
    run_torchrun(config_file, tmp_path / "many", processes, "--device", "cuda")
    assert_same_training(tmp_path / "one", tmp_path / "many")
    _, state = load_state(tmp_path / "many" / "state.safetensors")
    assert state["replicas"]["backend"] == "nccl" and state["replicas"]["processes"] == processes


def test_more_processes_than_gpus_fail_at_start_with_a_clear_message(tmp_path, config_file):
    processes = torch.cuda.device_count() + 1
    result = torchrun(config_file, tmp_path / "run", processes, "--device", "cuda")
    assert result.returncode != 0
    assert "need a GPU each" in result.stderr
    assert not (tmp_path / "run").exists()

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import pfn
from benchmarks.throughput import flops, run
from pfn.train import draw_step


def test_step_flops_include_the_cpu_attention_kernels():
    config = tiny_config()
    card = {"borders": torch.linspace(-3, 3, 17).tolist(), "tail_scales": [1.0, 1.0]}
    batch, n_train = draw_step(config, 5, range(4))
    b, n_rows, m = len(batch), batch.x.shape[1], config.model
    kv = (b, m.n_heads, n_train, m.d_model // m.n_heads)

    def attention_flops(queries: int) -> int:
        q = (b, m.n_heads, queries, m.d_model // m.n_heads)
        return sdpa_flop_count(q, kv, kv) + sdpa_backward_flop_count(q, q, kv, kv)

    # every block's queries are all rows, but the last block's only the test rows
    attention = (m.n_layers - 1) * attention_flops(n_rows) + attention_flops(n_rows - n_train)
    with FlopCounterMode(display=False) as plain:  # torch's own table leaves CPU attention out
        model = pfn.train.build_model(config)
        out = model(batch.x, batch.y[:, :n_train], batch.used_features)
        F.cross_entropy(out.reshape(-1, out.shape[-1]), torch.zeros(out.shape[0] * out.shape[1]).long()).backward()
    assert flops(config, card, batch, n_train) == plain.get_total_flops() + attention


def test_quick_throughput_reports_speed_against_the_peak_and_the_sampler_share(tmp_path):
    result = run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert (tmp_path / "throughput.png").is_file() and saved["models"].keys() == {"linear"}
    row = result["models"]["linear"]
    assert result["peak_gflops"]["fp32"] > 0 and row["gflop_per_step"] > 0
    assert 0 < row["peak_share"] and 0 <= row["sampler_share"] < 1
    assert set(row["pipeline"]) == {"in the loop", "1 worker", "1 worker, nice 10"}
    timed = {v: c["step_s"] for v, c in row["compute"].items() if v in ("fp32", "bf16")}
    assert row["pipeline_precision"] == min(timed, key=timed.get)  # whole steps in the faster precision
    kernels = result["attention_kernels"]
    assert {k["precision"] for k in kernels} == set(timed) and all(k["fused"] > 0 and k["plain"] > 0 for k in kernels)
    assert {k["picked"] for k in kernels if k["precision"] == "fp32"} == {"fused"}  # plain ops only pay off in bf16
    fastest = min(variant["step_s"] for variant in row["compute"].values())
    assert row["datasets_per_s"] * fastest == pytest.approx(row["batch_size"])

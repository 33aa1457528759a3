import json

import numpy as np
import pytest
import torch
from helpers import tiny_config

import pfn
from pfn.checkpoint import CheckpointError, atomic_write, save_model
from pfn.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    train(tiny_config(), path, progress=False)
    return path


def test_round_trip_predicts_identically(run_dir, tmp_path):
    model = pfn.load(run_dir / "model.safetensors")
    save_model(
        tmp_path / "copy",
        model.model.state_dict(),
        {k: v for k, v in model.card.items() if k not in ("format", "weights_sha256")},
        torch.float32,
    )
    again = pfn.load(tmp_path / "copy.json")
    x = torch.rand(30, 3)
    y = torch.randn(20)
    a, b = model.predict(x[:20], y, x[20:]), again.predict(x[:20], y, x[20:])
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert again.card["weights_sha256"] == model.card["weights_sha256"]


def test_load_accepts_the_run_folder_and_the_card(run_dir):
    assert pfn.load(run_dir).card == pfn.load(run_dir / "model.json").card


def test_tampered_weights_are_refused(run_dir, tmp_path):
    for name in ("model.safetensors", "model.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or was altered"):
        pfn.load(tmp_path / "model.safetensors")


def test_truncated_weights_are_refused(run_dir, tmp_path):
    (tmp_path / "model.json").write_bytes((run_dir / "model.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or was altered"):
        pfn.load(tmp_path / "model.safetensors")


def test_card_must_match_the_weights(run_dir, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes())
    card = json.loads((run_dir / "model.json").read_text())
    card["model"]["d_model"] = 32
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit the card's architecture"):
        pfn.load(tmp_path / "model.safetensors")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        pfn.load(tmp_path / "model.safetensors")
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a pfn card"):
        pfn.load(tmp_path / "model.safetensors")


def test_a_pickle_is_never_loaded(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="no checkpoint named"):
        pfn.load(tmp_path / "model.pt")


def test_unknown_name_lists_the_shipped_names():
    with pytest.raises(CheckpointError, match=r"shipped names are \[.*'gp'.*\]"):
        pfn.load("no-such-model")


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_weights_can_be_stored_in_half_precision(run_dir, tmp_path):
    model = pfn.load(run_dir)
    card = {k: v for k, v in model.card.items() if k not in ("format", "weights_sha256")}
    save_model(tmp_path / "half", model.model.state_dict(), card, torch.bfloat16)
    half = pfn.load(tmp_path / "half")
    assert half.card["weights_dtype"] == "bfloat16"
    x, y = np.random.default_rng(0).random((12, 3)), np.random.default_rng(1).standard_normal(8)
    a, b = model.predict(x[:8], y, x[8:]).mean(), half.predict(x[:8], y, x[8:]).mean()
    torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)

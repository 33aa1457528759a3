import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config
from safetensors.torch import load_file, save_file

import pfn
from pfn import checkpoint
from pfn.checkpoint import CheckpointError, InferenceConfig, atomic_write, save_model, sha256
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
    with pytest.raises(CheckpointError, match=r"model.pt is not a checkpoint file: .*pfn never unpickles"):
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


@pytest.mark.parametrize(
    "argument, error, message",
    [
        (None, TypeError, r"a shipped name or a path \(str or pathlib.Path\), got NoneType: None; shipped names are"),
        (3, TypeError, "got int: 3"),
        (b"gp", TypeError, "got bytes"),
        (["gp"], TypeError, "got list"),
        ("", CheckpointError, r"the checkpoint name is empty: give one of \[.*'gp'.*\] or a path"),
        ("gpp", CheckpointError, r"no checkpoint named 'gpp': shipped names are \[.*\] \(did you mean 'gp'\?\)"),
        (
            Path("gp"),
            CheckpointError,
            r"no checkpoint named 'gp': the path gp does not exist; 'gp' is a shipped name: pass the string 'gp', "
            r"not a Path, to load it \(shipped names are \[.*'gp'.*\]\)",
        ),
        (Path("no/such/model.safetensors"), CheckpointError, r"the path no/such/model.safetensors does not exist"),
    ],
)
def test_load_checks_its_argument(argument, error, message):
    with pytest.raises(error, match=message):
        pfn.load(argument)


def test_a_folder_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"holds no checkpoint: expected model.json and model.safetensors"):
        pfn.load(tmp_path)
    with pytest.raises(CheckpointError, match=r"holds no checkpoint"):
        pfn.load(str(tmp_path))


# Tampering with a copy of a shipped checkpoint (gp-hyper: 3 features, 256 buckets, d_model 64,
# 4 layers of 4 heads, d_ff 128). Changes to the weights file re-sign it (the card's sha256 is
# updated), so the checks behind the checksum are reached.
SHIPPED = "gp-hyper"


def edit_card(change):
    def tamper(path: Path) -> None:
        card = json.loads(path.with_suffix(".json").read_text())
        change(card)
        path.with_suffix(".json").write_text(json.dumps(card))

    return tamper


def set_field(dotted, value):
    def change(card):
        *parents, last = dotted.split(".")
        node = card
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit_card(change)


def drop_field(dotted):
    def change(card):
        *parents, last = dotted.split(".")
        node = card
        for key in parents:
            node = node[key]
        del node[last]

    return edit_card(change)


def set_border(index, value):
    return edit_card(lambda card: card["borders"].__setitem__(index, value))


def card_bytes(data: bytes):
    return lambda path: path.with_suffix(".json").write_bytes(data)


def resign(path: Path) -> None:
    card = json.loads(path.with_suffix(".json").read_text())
    card["weights_sha256"] = sha256(path)
    path.with_suffix(".json").write_text(json.dumps(card))


def edit_tensors(change):
    def tamper(path: Path) -> None:
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path))
        resign(path)

    return tamper


def poke(name, value):
    return edit_tensors(lambda t: t[name].view(-1).__setitem__(3, value))


def weights_bytes(change, sign=True):
    def tamper(path: Path) -> None:
        path.write_bytes(change(path.read_bytes()))
        if sign:
            resign(path)

    return tamper


def rename(tensors, old, new):
    tensors[new] = tensors.pop(old)


HUGE = {"d_model": 16384, "n_layers": 256, "d_ff": 65536, "n_heads": 16}
TAMPERING = {
    # the card's architecture
    "n_features float 1e9": (
        set_field("model.n_features", 1e9),
        r"model.n_features must be an integer in 0..10,000, found 1000000000.0 \(float\)",
    ),
    "n_features 10**9": (
        set_field("model.n_features", 10**9),
        r"model.n_features must be an integer in 0..10,000, found 1000000000 \(int\)",
    ),
    "d_model string": (set_field("model.d_model", "64"), r"model.d_model must be an integer .*found '64' \(str\)"),
    "n_layers bool": (set_field("model.n_layers", True), r"model.n_layers must be an integer .*\(bool\)"),
    "n_layers a million": (set_field("model.n_layers", 10**6), r"model.n_layers must be an integer in 0..256"),
    "n_heads negative": (set_field("model.n_heads", -4), r"model.n_heads must be an integer in 0..1,024, found -4"),
    "n_layers zero": (set_field("model.n_layers", 0), r"model is not a valid architecture: n_layers must be >= 1"),
    "n_heads not dividing d_model": (
        set_field("model.n_heads", 3),
        r"d_model \(64\) must be divisible by n_heads \(3\)",
    ),
    "unknown task": (set_field("model.task", "ranking"), r"model is not a valid architecture: task must be"),
    "task a number": (set_field("model.task", 1), r"model.task must be a string, found 1 \(int\)"),
    "model missing": (drop_field("model"), r"model must be an object with the architecture, found None"),
    "model a list": (set_field("model", [64, 4]), r"model must be an object .*\(list\)"),
    "model extra field": (set_field("model.dropout", 0.1), r"model has fields \['dropout'\] that no architecture has"),
    "model lacks d_ff": (drop_field("model.d_ff"), r"model lacks \['d_ff'\]"),
    "huge architecture": (
        edit_card(lambda card: card["model"].update(HUGE)),
        r"has over [0-9,]+ parameters, more than pfn loads \(1,000,000,000\)",
    ),
    "narrower architecture": (
        edit_card(lambda card: card["model"].update(d_model=32)),
        r"'x_encoder.weight' .* has shape \[64, 3\], but the card's architecture .*'d_model': 32.* needs \[32, 3\]",
    ),
    "wider architecture": (
        edit_card(lambda card: card["model"].update(d_model=128)),
        r"do not fit the card's architecture .*the file holds 175,744 weights, the architecture at least",
    ),
    "one layer more": (set_field("model.n_layers", 5), r"do not fit the card's architecture .*the file holds"),
    "one layer fewer": (set_field("model.n_layers", 3), r"unexpected \['blocks.3.ff1.bias', "),
    "more features": (
        set_field("model.n_features", 4),
        r"'x_encoder.weight' .* has shape \[64, 3\], but .* needs \[64, 4\]",
    ),
    "fewer buckets": (
        edit_card(lambda card: (card["model"].update(n_outputs=255), card["borders"].pop())),
        r"'decoder.2.weight' .* has shape \[256, 128\], but .* needs \[255, 128\]",
    ),
    "top-level task differs": (
        set_field("task", "classification"),
        r"task is 'classification' \(str\) but model.task is 'regression'",
    ),
    "classification with borders": (
        edit_card(lambda card: (card["model"].update(task="classification"), card.update(task="classification"))),
        r"borders belongs to regression cards",
    ),
    # borders
    "borders a string": (
        set_field("borders", "abc"),
        r"borders must be a list of 257 numbers \(model.n_outputs \+ 1\), found 'abc' \(str\)",
    ),
    "borders missing": (drop_field("borders"), r"borders must be a list of 257 numbers .*found None"),
    "borders one short": (
        edit_card(lambda card: card["borders"].pop()),
        r"borders must be a list of 257 numbers .*found 256 entries",
    ),
    "border NaN": (set_border(3, math.nan), r"borders\[3\] must be a finite number, found nan \(float\)"),
    "border infinite": (set_border(-1, math.inf), r"borders\[256\] must be a finite number, found inf"),
    "border a string": (set_border(0, "-3.0"), r"borders\[0\] must be a finite number, found '-3.0' \(str\)"),
    "border null": (set_border(5, None), r"borders\[5\] must be a finite number, found None"),
    "border bool": (set_border(5, False), r"borders\[5\] must be a finite number, found False \(bool\)"),
    "borders decreasing": (
        edit_card(lambda card: card["borders"].reverse()),
        r"borders must increase strictly, but borders\[0\]",
    ),
    "border repeated": (
        edit_card(lambda card: card["borders"].__setitem__(10, card["borders"][9])),
        r"borders must increase strictly, but borders\[9\] = .* >= borders\[10\]",
    ),
    "borders equal in float32": (
        edit_card(lambda card: card["borders"].__setitem__(10, card["borders"][9] * (1 + 1e-12))),
        r"borders must increase strictly, but borders\[9\]",
    ),
    "border beyond float32": (set_border(-1, 1e39), r"borders must lie within float32's range"),
    # tail scales
    "tail scales strings": (
        set_field("tail_scales", ["1", "2"]),
        r"tail_scales must be two positive finite numbers \[left, right\] \(or null\), found \['1', '2'\]",
    ),
    "tail scale zero": (set_field("tail_scales", [0, 1.0]), r"tail_scales must be two positive finite numbers"),
    "tail scale negative": (set_field("tail_scales", [1.0, -1.0]), r"tail_scales must be two positive finite numbers"),
    "tail scale infinite": (
        set_field("tail_scales", [math.inf, 1.0]),
        r"tail_scales must be two positive finite numbers",
    ),
    "tail scale zero in float32": (
        set_field("tail_scales", [1e-50, 1.0]),
        r"tail_scales must be two positive finite numbers",
    ),
    "one tail scale": (set_field("tail_scales", [1.0]), r"tail_scales must be two positive finite numbers"),
    "tail scales a string": (
        set_field("tail_scales", "wide"),
        r"tail_scales must be two positive finite numbers .*'wide'",
    ),
    # temperature and other fields
    "temperature zero": (
        set_field("quality.temperature.best", 0),
        r"quality.temperature.best must be a number in \[0.01, 100.0\] \(it divides the logits\), found 0 \(int\)",
    ),
    "temperature negative": (
        set_field("quality.temperature.best", -0.8),
        r"quality.temperature.best must be a number in",
    ),
    "temperature tiny": (
        set_field("quality.temperature.best", 1e-300),
        r"quality.temperature.best must be a number in",
    ),
    "temperature NaN": (
        set_field("quality.temperature.best", math.nan),
        r"quality.temperature.best must be a number in .*found nan",
    ),
    "temperature a string": (
        set_field("quality.temperature.best", "0.8"),
        r"quality.temperature.best must be a number in .*'0.8' \(str\)",
    ),
    "inference temperature zero": (
        set_field("inference.softmax_temperature", 0),
        r"inference.softmax_temperature must be a number in \[0.01, 100.0\] .*found 0 \(int\)",
    ),
    "inference temperature a string": (
        set_field("inference.softmax_temperature", "0.8"),
        r"inference.softmax_temperature must be a number in .*'0.8' \(str\)",
    ),
    "inference unknown field": (
        set_field("inference.temprature", 0.8),
        r"inference has unknown field\(s\) \['temprature'\]",
    ),
    "inference a list": (set_field("inference", [0.8]), r"inference must be an object \(a JSON \{...\}\)"),
    "smoothing negative": (
        set_field("inference.density_smoothing", -0.01),
        r"inference.density_smoothing must be a number in \[0, 1.0\] \(the smoothing kernel's standard deviation\), "
        r"found -0.01",
    ),
    "smoothing a string": (set_field("inference.density_smoothing", "0.01"), r"density_smoothing must be a number in"),
    "temperature a number": (
        set_field("quality.temperature", 0.8),
        r"quality.temperature must be an object, found 0.8",
    ),
    "quality a string": (set_field("quality", "good"), r"quality must be an object \(a JSON \{...\}\), found 'good'"),
    "prior a string": (set_field("prior", "gp"), r"prior must be an object"),
    "prior type a number": (set_field("prior.type", 3), r"prior.type must be a string, found 3"),
    "name a number": (set_field("name", 5), r"name must be a string, found 5 \(int\)"),
    "sha256 missing": (drop_field("weights_sha256"), r"weights_sha256 must be the 64 hex digits"),
    "sha256 a number": (set_field("weights_sha256", 123), r"weights_sha256 must be a string"),
    "sha256 short": (set_field("weights_sha256", "abc"), r"weights_sha256 must be the 64 hex digits"),
    "dtype unknown": (
        set_field("weights_dtype", "int8"),
        r"weights_dtype must be one of \['bfloat16', 'float16', 'float32', 'float64'\], found 'int8'",
    ),
    "dtype differs from the file": (
        set_field("weights_dtype", "bfloat16"),
        r"is F32, but the card says weights_dtype 'bfloat16' \(BF16\)",
    ),
    "format missing": (drop_field("format"), r"is not a pfn card \(expected format 'pfn-card/1'\)"),
    # the card file itself
    "card a pickle": (
        lambda path: path.with_suffix(".json").write_bytes(pickle.dumps({"format": "pfn-card/1"})),
        r"is not a JSON card: it looks like a pickle or torch.save file, which pfn never loads",
    ),
    "card a torch.save file": (
        lambda path: torch.save({"format": "pfn-card/1"}, path.with_suffix(".json")),
        r"looks like a pickle or torch.save file",
    ),
    "card binary junk": (
        card_bytes(bytes(range(256)) * 4),
        r"is not a JSON card: it holds binary data, not UTF-8 text",
    ),
    "card nested deeply": (card_bytes(b"[" * 100_000 + b"]" * 100_000), r"is not a JSON card: it is nested too deeply"),
    "card truncated": (
        lambda path: path.with_suffix(".json").write_text(path.with_suffix(".json").read_text()[:500]),
        r"is not valid JSON",
    ),
    "card a list": (card_bytes(b"[1, 2]"), r"is not a pfn card"),
    "card missing": (lambda path: path.with_suffix(".json").unlink(), r"the card .*m.json is missing"),
    # the weights file (re-signed unless said otherwise)
    "NaN weight": (
        poke("blocks.2.qkv.weight", math.nan),
        r"the tensor 'blocks.2.qkv.weight' .* holds NaN or infinite weights",
    ),
    "infinite weight": (
        poke("decoder.2.bias", -math.inf),
        r"the tensor 'decoder.2.bias' .* holds NaN or infinite weights",
    ),
    "extra tensor": (
        edit_tensors(lambda t: t.update(extra=torch.zeros(3))),
        r"do not fit the card's architecture .*missing \[\], unexpected \['extra'\]",
    ),
    "missing tensor": (edit_tensors(lambda t: t.pop("norm.bias")), r"missing \['norm.bias'\], unexpected \[\]"),
    "renamed tensor": (
        edit_tensors(lambda t: rename(t, "norm.bias", "norm.b")),
        r"missing \['norm.bias'\], unexpected \['norm.b'\]",
    ),
    "transposed tensor": (
        edit_tensors(lambda t: t.update({"x_encoder.weight": t["x_encoder.weight"].T.contiguous()})),
        r"the tensor 'x_encoder.weight' .* has shape \[3, 64\], but the card's architecture .* needs \[64, 3\]",
    ),
    "half-precision tensor": (
        edit_tensors(lambda t: t.update({"norm.weight": t["norm.weight"].half()})),
        r"the tensor 'norm.weight' .* is F16, but the card says weights_dtype 'float32' \(F32\)",
    ),
    "integer tensor": (
        edit_tensors(lambda t: t.update({"norm.bias": t["norm.bias"].long()})),
        r"the tensor 'norm.bias' .* is I64, but the card says weights_dtype 'float32'",
    ),
    "weights truncated": (weights_bytes(lambda data: data[: len(data) // 2]), r"is not a readable safetensors file"),
    "weights junk": (weights_bytes(lambda data: bytes(range(256)) * 64), r"is not a readable safetensors file"),
    "weights a pickle": (
        weights_bytes(lambda data: pickle.dumps({"x": [0.0] * 100})),
        r"is not a readable safetensors file",
    ),
    "header length absurd": (
        weights_bytes(lambda data: (2**60).to_bytes(8, "little") + data[8:]),
        r"is not a readable safetensors file",
    ),
    "weights empty": (weights_bytes(lambda data: b""), r"is not a readable safetensors file"),
    "weights altered, not re-signed": (
        weights_bytes(lambda data: data[:-5] + b"\x00" * 5, sign=False),
        r"does not match the sha256 in its card: the file is truncated or was altered",
    ),
    "weights missing": (lambda path: path.unlink(), r"the weights file .*m.safetensors is missing"),
}


@pytest.fixture
def shipped_copy(tmp_path):
    """A copy of a shipped checkpoint: tmp/m.safetensors and tmp/m.json."""
    for suffix in (".safetensors", ".json"):
        (tmp_path / f"m{suffix}").write_bytes((checkpoint.WEIGHTS_DIR / f"{SHIPPED}{suffix}").read_bytes())
    return tmp_path / "m.safetensors"


def test_the_untampered_copy_loads_and_predicts_as_the_shipped_one(shipped_copy):
    x = torch.rand(12, 3, generator=torch.Generator().manual_seed(0))
    y = torch.randn(8, generator=torch.Generator().manual_seed(1))
    copy, shipped = pfn.load(shipped_copy), pfn.load(SHIPPED)
    torch.testing.assert_close(copy.predict(x[:8], y, x[8:]).logits, shipped.predict(x[:8], y, x[8:]).logits)


@pytest.mark.parametrize("case", TAMPERING)
def test_a_tampered_checkpoint_is_refused_with_a_clear_message(shipped_copy, case):
    tamper, message = TAMPERING[case]
    tamper(shipped_copy)
    with pytest.raises(CheckpointError, match=message):
        pfn.load(shipped_copy)


def test_an_oversized_card_is_refused_unread(shipped_copy, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_CARD_BYTES", 1000)
    with pytest.raises(CheckpointError, match=r"m.json has [0-9,]+ bytes, more than a card can \(1,000\)"):
        pfn.load(shipped_copy)


def test_the_parameter_floor_bounds_every_shipped_architecture():
    """The floor counted without building anything is at most the real count, and close to it."""
    for name in pfn.shipped_names():
        model = pfn.load(name)
        count = sum(p.numel() for p in model.model.parameters())
        assert 0.97 * count <= checkpoint.parameter_floor(model.config) <= count


def test_density_smoothing_belongs_to_regression_cards():
    card = {"model": {"task": "classification"}, "inference": {"density_smoothing": 0.01}}
    with pytest.raises(CheckpointError, match=r"smooths a regression model's buckets; .*'classification'"):
        InferenceConfig.from_card(card)
    regression = {"model": {"task": "regression"}, "inference": {"density_smoothing": 0.01}}
    assert InferenceConfig.from_card(regression) == InferenceConfig(softmax_temperature=1.0, density_smoothing=0.01)
    assert InferenceConfig.from_card({"model": {"task": "classification"}}).density_smoothing == 0.0

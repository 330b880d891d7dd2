"""Export to and import from safetensors: PyTorch loads an export strictly and computes the same
logits; export then import gives back every bit; files that lie are refused with one line; the export
and import commands."""

import json
import os
import re
import struct

import numpy as np
import pytest

from charrnn import CharRNN, Checkpoint, ModelConfig, Vocab, load_checkpoint, save_checkpoint
from charrnn.io.export import ExportError, export_checkpoint, import_safetensors, read_export
from charrnn.io.safetensors import SafetensorsError, read_safetensors, write_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


VOCAB = Vocab(tuple(sorted("\n !',.:;?abcdefghijklmnopqrstuvwxyzABC")))


CASES = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def make_checkpoint(path, model="lstm", activation="tanh", num_layers=2, dtype="float64", seed=0):
    config = ModelConfig(len(VOCAB), model, 12, num_layers, activation=activation, dtype=dtype)
    net = CharRNN(config, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    for value in net.params.values():  # every bias nonzero, so a misplaced one shows
        value[...] += rng.normal(0, 0.3, value.shape)
    save_checkpoint(str(path), Checkpoint(net, VOCAB, {"step": 7}))
    return net


def torch_model(config):
    """The module the export documents (docs/scaling.md: Export to PyTorch)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[config["model"]]
    extra = {"nonlinearity": config["activation"]} if config["model"] == "rnn" else {}
    V, H, L = config["vocab_size"], config["hidden_size"], config["num_layers"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cls(input_size=V, hidden_size=H, num_layers=L, **extra)
            self.decoder = nn.Linear(H, V)

        def forward(self, ids, state=None):
            out, state = self.rnn(nn.functional.one_hot(ids, V).double(), state)
            return self.decoder(out), state

    return Net().double()


@pytest.mark.parametrize("model,activation", CASES)
def test_pytorch_loads_export_strictly_and_gives_same_logits(tmp_path, model, activation):
    torch = pytest.importorskip("torch")
    net = make_checkpoint(tmp_path / "m.npz", model, activation)
    export_checkpoint(str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors"))
    tensors, metadata = read_safetensors(str(tmp_path / "m.safetensors"))
    config = json.loads(metadata["charrnn.model"])
    assert json.loads(metadata["charrnn.vocab"])["symbols"] == list(VOCAB.symbols)
    module = torch_model(config)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    ids = np.random.default_rng(3).integers(0, len(VOCAB), (9, 4))
    state = tuple(np.random.default_rng(4).normal(size=(2, 4, 12)) for _ in net.cell.state_names)
    want, want_state = net.forward(ids, state)
    torch_state = tuple(torch.from_numpy(s) for s in state)
    with torch.no_grad():
        got, got_state = module(torch.from_numpy(ids), torch_state if model == "lstm" else torch_state[0])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    got_state = got_state if model == "lstm" else (got_state,)
    for a, b in zip(got_state, want_state):
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-10)


def test_reference_safetensors_reader_agrees(tmp_path):
    """The format as the safetensors package itself reads it (names, dtypes, shapes, values, metadata)."""
    st = pytest.importorskip("safetensors.numpy")
    make_checkpoint(tmp_path / "m.npz", "gru", dtype="float32")
    export_checkpoint(str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors"))
    ours, metadata = read_safetensors(str(tmp_path / "m.safetensors"))
    theirs = st.load_file(str(tmp_path / "m.safetensors"))
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        assert theirs[name].dtype == np.float32 and np.array_equal(theirs[name], value)
    st.save_file(theirs, str(tmp_path / "theirs.safetensors"), metadata=metadata)
    again, again_meta = read_safetensors(str(tmp_path / "theirs.safetensors"))
    assert again_meta == metadata and all(np.array_equal(again[k], v) for k, v in ours.items())


@pytest.mark.parametrize("model,activation", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_then_import_is_bit_identical(tmp_path, model, activation, dtype, cli):
    net = make_checkpoint(tmp_path / "m.npz", model, activation, dtype=dtype)
    net.params["l0.b"][0] = -0.0  # even the sign of a zero survives
    save_checkpoint(str(tmp_path / "m.npz"), Checkpoint(net, VOCAB, {}))
    result = cli(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    result = cli(["import", str(tmp_path / "m.safetensors"), str(tmp_path / "back.npz")])
    assert result.exit_code == 0, result.output
    back = load_checkpoint(str(tmp_path / "back.npz"))
    assert back.model.config == net.config and back.vocab == VOCAB
    assert back.model.params.flat.tobytes() == net.params.flat.tobytes()


def test_import_of_a_model_trained_in_pytorch(tmp_path):
    """A PyTorch module's own state_dict (nonzero recurrent biases, float32, minimal metadata: the vocabulary's
    symbols alone) imports, and charrnn computes what PyTorch computes."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = {"vocab_size": len(VOCAB), "model": "gru", "hidden_size": 12, "num_layers": 2}
    module = torch_model(config)
    tensors = {k: v.float().numpy() for k, v in module.state_dict().items()}
    metadata = {"charrnn.model": json.dumps(config), "charrnn.vocab": json.dumps({"symbols": list(VOCAB.symbols)})}
    write_safetensors(str(tmp_path / "t.safetensors"), tensors, metadata)
    ckpt = import_safetensors(str(tmp_path / "t.safetensors"), str(tmp_path / "t.npz"))
    assert ckpt.model.config.dtype == "float32"
    ids = np.random.default_rng(0).integers(0, len(VOCAB), (7, 3))
    with torch.no_grad():
        want, _ = module(torch.from_numpy(ids))
    got, _ = load_checkpoint(str(tmp_path / "t.npz")).model.forward(ids)
    np.testing.assert_allclose(got, want.numpy(), atol=2e-5)


def test_imported_checkpoint_samples_evaluates_and_trains(tmp_path, cli):
    """An import samples, scores, and trains on from step 0 with a fresh optimizer (--resume)."""
    make_checkpoint(tmp_path / "m.npz", "lstm", dtype="float32")
    export_checkpoint(str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors"))
    text = tmp_path / "t.txt"
    text.write_text("".join(VOCAB.symbols) * 40)
    assert cli(["import", str(tmp_path / "m.safetensors"), str(tmp_path / "i.npz")]).exit_code == 0
    result = cli(["sample", str(tmp_path / "i.npz"), "--length", "20", "--random-seed", "1"])
    assert result.exit_code == 0 and len(result.output) > 20
    assert cli(["eval", str(tmp_path / "i.npz"), str(text)]).exit_code == 0
    ck = str(tmp_path / "ck")
    result = cli(["train", str(text), "--resume", str(tmp_path / "i.npz"), "--checkpoint-dir", ck,
                                  "--max-steps", "3", "--batch-size", "4", "--seq-length", "10", "--sample-length", "0",
                                  "--workers", "1"])
    assert result.exit_code == 0, result.output
    trained = load_checkpoint(ck)
    assert trained.meta["step"] == 3 and trained.model.config == load_checkpoint(str(tmp_path / "m.npz")).model.config


def write_raw(path, header, data):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return str(path)


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F64", "shape": [1], "data_offsets": [8, 16]}}


@pytest.mark.parametrize(
    "header,data,message",
    [
        ({**GOOD, "a": {**GOOD["a"], "shape": [3]}}, bytes(16), "needs 12"),
        ({**GOOD, "a": {**GOOD["a"], "data_offsets": [0, 12]}}, bytes(16), "hold 12 bytes"),
        ({**GOOD, "b": {**GOOD["b"], "data_offsets": [4, 12]}}, bytes(16), "overlap"),
        ({**GOOD, "b": {**GOOD["b"], "data_offsets": [12, 20]}}, bytes(20), "gap of 4 bytes"),
        (GOOD, bytes(12), "truncated"),
        (GOOD, bytes(24), "8 bytes after"),
        ({**GOOD, "a": {**GOOD["a"], "dtype": "F128"}}, bytes(16), "unknown dtype"),
        ({**GOOD, "a": {**GOOD["a"], "shape": [-2]}}, bytes(16), "non-negative"),
        ({**GOOD, "a": {**GOOD["a"], "data_offsets": [0]}}, bytes(16), "two non-negative"),
        ({**GOOD, "a": {"dtype": "F32", "shape": [2]}}, bytes(16), "exactly dtype"),
        ({**GOOD, "__metadata__": {"k": 3}}, bytes(16), "strings"),
        (b"[1, 2]", b"", "not a JSON object"),
        (b'{"a": ', b"", "not valid JSON"),
        (b"\xff\xfe{}", b"", "not UTF-8"),
        (b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": {}}', b"", "duplicate"),
    ],
)
def test_lying_headers_are_refused_with_one_line(tmp_path, header, data, message):
    path = write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(SafetensorsError, match=message) as info:
        read_safetensors(path)
    assert "\n" not in str(info.value)


def test_header_length_beyond_the_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(SafetensorsError, match="truncated"):
        read_safetensors(str(path))
    path.write_bytes(b"abc")
    with pytest.raises(SafetensorsError, match="shorter than"):
        read_safetensors(str(path))


def test_well_formed_file_reads(tmp_path):
    data = np.array([1.5, -2], "<f4").tobytes() + np.array([3.25], "<f8").tobytes()
    tensors, metadata = read_safetensors(write_raw(tmp_path / "ok.safetensors", GOOD, data))
    assert tensors["a"].tolist() == [1.5, -2] and tensors["b"].tolist() == [3.25] and metadata == {}


def test_bfloat16_reads_exactly(tmp_path):
    values = [1.0, -2.5, 3.140625]
    bits = [struct.unpack("<I", struct.pack("<f", v))[0] >> 16 for v in values]
    data = np.array(bits, "<u2").tobytes()
    header = {"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}
    tensors, _ = read_safetensors(write_raw(tmp_path / "bf.safetensors", header, data))
    assert tensors["w"].dtype == np.float32 and tensors["w"].tolist() == values


def export_tensors(tmp_path, model="lstm"):
    make_checkpoint(tmp_path / "m.npz", model)
    export_checkpoint(str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors"))
    return read_safetensors(str(tmp_path / "m.safetensors"))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t, m: t.pop("decoder.bias"), "missing decoder.bias"),
        (lambda t, m: t.update(extra=np.zeros(2)), "unexpected extra"),
        (lambda t, m: t.update({"rnn.weight_hh_l1": np.zeros((48, 13))}), r"rnn.weight_hh_l1 is \[48, 13\]"),
        (lambda t, m: m.update({"charrnn.model": json.dumps({**json.loads(m["charrnn.model"]), "num_layers": 3})}),
         "missing rnn.weight_ih_l2"),
        (lambda t, m: m.update({"charrnn.model": json.dumps({**json.loads(m["charrnn.model"]), "model": "gru"})}),
         "is \\[48, 38\\], but"),
        (lambda t, m: m.update({"charrnn.model": json.dumps({**json.loads(m["charrnn.model"]), "dtype": "float32"})}),
         "F64, which does not fit a float32"),
        (lambda t, m: m.update({"charrnn.model": json.dumps({**json.loads(m["charrnn.model"]), "colour": 1})}),
         "unknown fields: colour"),
        (lambda t, m: m.pop("charrnn.vocab"), "no charrnn.vocab"),
        (lambda t, m: m.update({"charrnn.vocab": "{"}), "not valid JSON"),
        (lambda t, m: m.update({"charrnn.vocab": json.dumps({"bytes_mode": False})}), 'has no "symbols"'),
        (lambda t, m: t.update({"decoder.bias": np.zeros(38, np.int32)}), "I32, which does not fit|int32"),
    ],
)
def test_import_whose_tensors_do_not_match_metadata(tmp_path, change, message):
    tensors, metadata = export_tensors(tmp_path)
    change(tensors, metadata)
    write_safetensors(str(tmp_path / "bad.safetensors"), tensors, metadata)
    with pytest.raises(ExportError, match=message) as info:
        read_export(str(tmp_path / "bad.safetensors"))
    assert "\n" not in str(info.value)


def test_cli_errors_are_one_line(tmp_path, cli):
    bad = write_raw(tmp_path / "bad.safetensors", {**GOOD, "b": {**GOOD["b"], "data_offsets": [4, 12]}}, bytes(16))
    result = cli(["import", bad, str(tmp_path / "out.npz")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "overlap" in result.output
    assert not (tmp_path / "out.npz").exists()
    config = ModelConfig(len(VOCAB), "rnn", 8, 1, activation="sigmoid")
    save_checkpoint(str(tmp_path / "s.npz"), Checkpoint(CharRNN(config), VOCAB, {}))
    result = cli(["export", str(tmp_path / "s.npz"), str(tmp_path / "s.safetensors")])
    assert result.exit_code == 1 and "no sigmoid nonlinearity" in result.output and result.output.count("\n") == 1
    result = cli(["export", bad, str(tmp_path / "x.safetensors")])
    assert result.exit_code == 1 and "not a charrnn checkpoint" in result.output
    make_checkpoint(tmp_path / "ok.npz")
    result = cli(["export", str(tmp_path / "ok.npz"), str(tmp_path / "no" / "x.safetensors")])
    assert result.exit_code == 1 and "no/x.safetensors: cannot write (No such file" in result.output


def test_readme_pytorch_lines_load_an_export(tmp_path, monkeypatch):
    """The README's lines of PyTorch, run as written on an export, give charrnn's logits."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"<!-- pytorch-load: \S+ runs this block -->\n```python\n(.*?)```", readme, re.S)[1]
    net = make_checkpoint(tmp_path / "m.npz", "lstm", dtype="float32")
    export_checkpoint(str(tmp_path / "m.npz"), str(tmp_path / "model.safetensors"))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(block.replace('"Romeo."', '"CAB, a:"'), namespace)  # (this vocabulary's capitals are A, B, C)
    want, _ = net.forward(VOCAB.encode("CAB, a:")[:, None])
    np.testing.assert_allclose(namespace["logits"].detach().numpy(), want, atol=1e-5)


def test_export_and_import_never_write_over_an_existing_file(tmp_path, cli):
    """Export over the checkpoint it reads, or import over a trained checkpoint, is refused in one line
    and the file stays as it was; --overwrite replaces it."""
    make_checkpoint(tmp_path / "m.npz")
    before = (tmp_path / "m.npz").read_bytes()
    for overwrite in ([], ["--overwrite"]):  # its own input: never, --overwrite or not
        result = cli(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.npz"), *overwrite])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and "is the file being read" in result.output
        assert (tmp_path / "m.npz").read_bytes() == before
    assert cli(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors")]).exit_code == 0
    result = cli(["import", str(tmp_path / "m.safetensors"), str(tmp_path / "m.npz")])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert (tmp_path / "m.npz").read_bytes() == before
    result = cli(["import", str(tmp_path / "m.safetensors"), str(tmp_path / "m.npz"), "--overwrite"])
    assert result.exit_code == 0, result.output
    exported = (tmp_path / "m.safetensors").read_bytes()
    for output in ("m.safetensors", "m.txt"):  # its own input, even with --overwrite; a name without .npz
        result = cli(["import", str(tmp_path / "m.safetensors"), str(tmp_path / output), "--overwrite"])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert (tmp_path / "m.safetensors").read_bytes() == exported and not (tmp_path / "m.txt").exists()
    result = cli(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors"), "--overwrite"])
    assert result.exit_code == 0, result.output


def test_export_gets_the_permissions_of_any_new_file(tmp_path):
    """As a checkpoint: the umask decides (0644 under 022), not mkstemp's 0600."""
    make_checkpoint(tmp_path / "m.npz")
    old = os.umask(0o022)
    try:
        export_checkpoint(str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors"))
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644


def test_info_of_an_import_shows_no_none(tmp_path, cli):
    """An import has no training position: info shows '-' there, not Python's None."""
    make_checkpoint(tmp_path / "m.npz")
    export_checkpoint(str(tmp_path / "m.npz"), str(tmp_path / "m.safetensors"))
    import_safetensors(str(tmp_path / "m.safetensors"), str(tmp_path / "i.npz"))
    result = cli(["info", str(tmp_path / "i.npz")])
    assert result.exit_code == 0 and "None" not in result.output and "step" in result.output


def nanogpt(config):
    """nanoGPT's GPT as charrnn's gpt exports it (README): lm_head with a bias, untied; GELU tanh."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    V, C, L, nh, P = (config[k] for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "context_length"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.attn, self.mlp = nn.Module(), nn.Module()
            self.attn.c_attn, self.attn.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.mlp.c_fc, self.mlp.c_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in self.attn.c_attn(self.ln_1(x)).split(C, 2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + self.attn.c_proj(y)
            return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict({"wte": nn.Embedding(V, C), "wpe": nn.Embedding(P, C),
                                              "h": nn.ModuleList(Block() for _ in range(L)), "ln_f": nn.LayerNorm(C)})
            self.lm_head = nn.Linear(C, V)

        def forward(self, ids):  # (B, T)
            x = self.transformer.wte(ids) + self.transformer.wpe(torch.arange(ids.shape[1]))
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(self.transformer.ln_f(x))

    return GPT().double()


def test_gpt_exports_as_nanogpt_and_imports_back(tmp_path):
    torch = pytest.importorskip("torch")
    from charrnn.models.gpt import CharGPT, GPTConfig

    config = GPTConfig(len(VOCAB), hidden_size=16, num_layers=2, num_heads=4, context_length=12, dtype="float64")
    net = CharGPT(config, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for value in net.params.values():
        value[...] += rng.normal(0, 0.3, value.shape)
    save_checkpoint(str(tmp_path / "g.npz"), Checkpoint(net, VOCAB, {}))
    export_checkpoint(str(tmp_path / "g.npz"), str(tmp_path / "g.safetensors"))
    tensors, metadata = read_safetensors(str(tmp_path / "g.safetensors"))
    module = nanogpt(json.loads(metadata["charrnn.model"]))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    ids = np.random.default_rng(2).integers(0, len(VOCAB), (10, 3))  # (T, B)
    want, _ = net.forward(ids)
    with torch.no_grad():
        got = module(torch.from_numpy(ids.T.copy())).numpy().transpose(1, 0, 2)  # (B, T, V) -> (T, B, V)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    back = import_safetensors(str(tmp_path / "g.safetensors"), str(tmp_path / "back.npz"))
    assert back.model.config == config and back.model.params.flat.tobytes() == net.params.flat.tobytes()

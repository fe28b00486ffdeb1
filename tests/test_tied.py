"""Tied embeddings: a head whose weight is the token embedding's is one parameter, counted once.

Each model is written once as source; memlint reads it statically, and the test builds the same classes with
torch (on the meta device: shapes, no memory) and compares memlint's whole-run count with
`sum(p.numel() for p in model.parameters())`, which counts a shared parameter once.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import memlint  # noqa: E402
from memlint.checks import FileContext  # noqa: E402
from memlint.checks.params import tied_parameters  # noqa: E402
from memlint.cli import main  # noqa: E402
from memlint.settings import Settings  # noqa: E402
from memlint.sizes import SizeTable  # noqa: E402
from memlint.sources.python import parse_python  # noqa: E402

V, D = 32000, 256

SAME_CLASS = """
import torch.nn as nn

class GPT(nn.Module):
    def __init__(self, vocab_size=32000, d_model=256, n_layers=2, bias=False):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(n_layers)])
        self.lm_head = nn.Linear(d_model, vocab_size, bias={bias})
        {tie}

    def forward(self, idx):
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(x)
"""

THROUGH_SUBMODULE = """
import torch.nn as nn

class Transformer(nn.Module):
    def __init__(self, vocab_size=32000, d_model=256):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(1024, d_model)
        self.ln_f = nn.LayerNorm(d_model)

class LMHeadModel(nn.Module):
    def __init__(self, vocab_size=32000, d_model=256):
        super().__init__()
        self.transformer = Transformer(vocab_size, d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        {tie}
"""

NANOGPT = """
import torch.nn as nn

class GPT(nn.Module):
    def __init__(self, vocab_size=32000, n_embd=256, block_size=1024):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        {tie}
"""

# HF's pattern: `_tied_weights_keys` applied by post_init() when config.tie_word_embeddings is true. The base
# class here stands in for transformers' PreTrainedModel (same rule: getattr(config, key, False)).
HF_MODEL = """
import torch.nn as nn

class PreTrainedModel(nn.Module):
    def post_init(self):
        if getattr(self.config, "tie_word_embeddings", False):
            for target, source in self._tied_weights_keys.items():
                module = self
                for part in target.split(".")[:-1]:
                    module = getattr(module, part)
                shared = self
                for part in source.split("."):
                    shared = getattr(shared, part)
                module.weight = shared

class Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size)

class ForCausalLM(PreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
"""

HF_CONFIG_CLASS = """
class TinyConfig:
    vocab_size: int = 32000
    hidden_size: int = 256
    tie_word_embeddings: bool = {default}
"""


def _write(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return [str(tmp_path / name) for name in files]


def _budget(tmp_path: Path, files: dict[str, str], **dims):
    if not any(name.endswith((".json", ".yaml")) for name in files):  # a budget is made per config profile
        files = {**files, "config.yaml": "training:\n  batch_size: 2\n"}
    paths = _write(tmp_path, files)
    settings = Settings(root=tmp_path, cache=False, jobs=1, dims=dims)
    report = memlint.check(paths, settings, gpu="H100")
    return max((b for b in report.budgets if b.files), key=lambda b: b.total_bytes)


def _torch_count(source: str, cls: str, *args) -> int:
    namespace: dict = {}
    exec(compile(textwrap.dedent(source), "model.py", "exec"), namespace)  # the test's own model code
    with torch.device("meta"):
        model = namespace[cls](*args)
    return sum(p.numel() for p in model.parameters())


def _tied_notes(budget) -> list[str]:
    return [n for n in budget.notes if "tied" in n]


@pytest.mark.parametrize(
    "tie",
    [
        "self.lm_head.weight = self.wte.weight",
        "self.wte.weight = self.lm_head.weight",
        "self._tie_or_clone_weights(self.lm_head, self.wte)",
    ],
)
def test_tie_in_the_same_class_is_counted_once(tmp_path, tie):
    source = SAME_CLASS.replace("{bias}", "False").replace("{tie}", tie)
    if "_tie_or_clone" in tie:  # transformers' old helper, given a body so torch can run it
        source += "\n    def _tie_or_clone_weights(self, out, inp):\n        out.weight = inp.weight\n"
    budget = _budget(tmp_path, {"model.py": source})
    measured = _torch_count(source, "GPT")
    assert measured == V * D + 2 * (D * D + D)
    assert budget.params == measured
    target = "wte" if tie.startswith("self.wte") else "lm_head"
    assert any(
        n.startswith(f"{target}.weight is tied to ") and "counted once" in n for n in _tied_notes(budget)
    )


def test_untied_model_counts_both_matrices(tmp_path):
    source = SAME_CLASS.replace("{bias}", "False").replace("{tie}", "pass")
    budget = _budget(tmp_path, {"model.py": source})
    assert budget.params == _torch_count(source, "GPT") == 2 * V * D + 2 * (D * D + D)
    assert _tied_notes(budget) == []


def test_tied_head_with_a_bias_keeps_its_bias(tmp_path):
    source = SAME_CLASS.replace("{bias}", "True").replace("{tie}", "self.lm_head.weight = self.wte.weight")
    budget = _budget(tmp_path, {"model.py": source})
    assert budget.params == _torch_count(source, "GPT") == V * D + V + 2 * (D * D + D)


@pytest.mark.parametrize(
    ("template", "cls", "tie"),
    [
        (THROUGH_SUBMODULE, "LMHeadModel", "self.lm_head.weight = self.transformer.wte.weight"),
        (NANOGPT, "GPT", "self.transformer.wte.weight = self.lm_head.weight"),
        (NANOGPT, "GPT", "self.lm_head.weight = self.transformer.wte.weight"),
    ],
)
def test_tie_through_a_submodule_or_module_dict(tmp_path, template, cls, tie):
    tied = template.replace("{tie}", tie)
    untied = template.replace("{tie}", "pass")
    measured_tied, measured_untied = _torch_count(tied, cls), _torch_count(untied, cls)
    assert measured_untied - measured_tied == V * D
    assert _budget(tmp_path, {"model.py": tied}).params == measured_tied
    assert _budget(tmp_path, {"model.py": untied}).params == measured_untied


class _Config:
    def __init__(self, tie):
        self.vocab_size, self.hidden_size = V, D
        if tie is not None:
            self.tie_word_embeddings = tie


@pytest.mark.parametrize("tie", [True, False])
def test_hf_tied_weights_keys_follow_config_json(tmp_path, tie):
    config = {"vocab_size": V, "hidden_size": D, "tie_word_embeddings": tie}
    files = {"modeling_tiny.py": HF_MODEL, "config.json": json.dumps(config)}
    budget = _budget(tmp_path, files)
    measured = _torch_count(HF_MODEL, "ForCausalLM", _Config(tie))
    assert measured == (V * D + 2 * D if tie else 2 * V * D + 2 * D)
    assert budget.params == measured
    notes = _tied_notes(budget)
    assert len(notes) == 1
    if tie:
        assert notes[0].startswith("lm_head.weight is tied to model.embed_tokens.weight: counted once")
        assert "tie_word_embeddings = true (config.json" in notes[0]
    else:
        assert "only if tie_word_embeddings is true" in notes[0] and "counted separately" in notes[0]


@pytest.mark.parametrize("default", [True, False])
def test_hf_missing_key_takes_the_configuration_class_default(tmp_path, default):
    files = {
        "modeling_tiny.py": HF_MODEL,
        "configuration_tiny.py": HF_CONFIG_CLASS.replace("{default}", str(default)),
        "config.json": json.dumps({"vocab_size": V, "hidden_size": D}),
    }
    budget = _budget(tmp_path, files)
    assert budget.params == _torch_count(HF_MODEL, "ForCausalLM", _Config(default))
    assert "TinyConfig default" in _tied_notes(budget)[0]


def test_hf_missing_key_and_no_configuration_class_is_undecided_not_guessed(tmp_path):
    files = {"modeling_tiny.py": HF_MODEL, "config.json": json.dumps({"vocab_size": V, "hidden_size": D})}
    budget = _budget(tmp_path, files)
    # transformers reads a config without the key as not tied: the two matrices are counted
    assert budget.params == _torch_count(HF_MODEL, "ForCausalLM", _Config(None)) == 2 * V * D + 2 * D
    (note,) = _tied_notes(budget)
    assert "no config declares tie_word_embeddings" in note and "--dim tie_word_embeddings=true" in note
    assert _budget(tmp_path, files, tie_word_embeddings=True).params == V * D + 2 * D


def test_tied_weights_keys_without_post_init_is_no_tie(tmp_path):
    source = HF_MODEL.replace("        self.post_init()\n", "")
    files = {"modeling_tiny.py": source, "config.json": json.dumps({"vocab_size": V, "hidden_size": D})}
    assert _budget(tmp_path, files, tie_word_embeddings=True).params == 2 * V * D + 2 * D


def test_mem301_says_a_tied_head_shares_the_embedding_storage(tmp_path, capsys):
    source = SAME_CLASS.replace("{bias}", "False").replace("{tie}", "self.lm_head.weight = self.wte.weight")
    (path,) = _write(tmp_path, {"model.py": source})
    main(["check", path, "--select", "MEM301", "--show-info", "--output-format", "json", "--no-cache"])
    findings = {f["message"].split(" =")[0]: f for f in json.loads(capsys.readouterr().out)}
    head = findings["lm_head"]
    assert "tied to wte.weight, shares the embedding's storage" in head["message"]
    assert "no extra weight, gradient or optimizer state" in head["message"]
    assert head["cost"]["bytes"] == 0
    embed = findings["wte"]
    assert embed["cost"]["bytes"] == V * D * 16  # the shared matrix, priced once, at the embedding


def test_mem301_untied_head_is_priced_in_full(tmp_path, capsys):
    source = SAME_CLASS.replace("{bias}", "False").replace("{tie}", "pass")
    (path,) = _write(tmp_path, {"model.py": source})
    main(["check", path, "--select", "MEM301", "--show-info", "--output-format", "json", "--no-cache"])
    findings = {f["message"].split(" =")[0]: f for f in json.loads(capsys.readouterr().out)}
    assert findings["lm_head"]["cost"]["bytes"] == V * D * 16
    assert "tied" not in findings["lm_head"]["message"]


def test_tied_parameters_api_names_both_groups():
    source = textwrap.dedent(
        THROUGH_SUBMODULE.replace("{tie}", "self.lm_head.weight = self.transformer.wte.weight")
    )
    ctx = FileContext(parse_python("model.py", source), "model.py", SizeTable())
    (tie,) = tied_parameters(ctx)
    assert (tie.cls, tie.target, tie.source, tie.active) == (
        "LMHeadModel",
        "lm_head.weight",
        "transformer.wte.weight",
        True,
    )
    assert tie.group.attr == "lm_head" and tie.shared.cls == "Transformer" and tie.shared.attr == "wte"

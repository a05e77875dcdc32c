"""`rlm compress`: every method on the tiny model, a tiny run and tiny reward models.

    python -m pytest tests/test_compression.py -q

Each output loads through the path its source loads through (``--model``, a run folder,
``--reward``), generates or scores, and has the dtype, quantized layers or zeros its
method promises; bfloat16 and int8 stay close to the original (tolerances below, in
units of the original logits' standard deviation).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlm.cli import main as rlm_main
from rlm.compress import compress
from rlm.compression import Compression, apply_pruning, make_pruning_permanent, sparsity_of
from rlm.errors import ConfigError
from rlm.models import load_causal_lm
from rlm.reward_models.data import LABELS
from rlm.reward_models.lstm import LSTMClassifier, LSTMSettings, Vocabulary, save_lstm
from rlm.reward_models.transformer import prepare_tokenizer, save_transformer_classifier
from rlm.saved_runs import SavedRun
from rlm.scorers.classifier import ClassifierReward
from tests.helpers import load_script, tiny_run

TOKENS = torch.tensor([[1, 2045, 314, 2151, 284, 253, 1379, 30]])
# Largest change of a logit, over the standard deviation of the original's logits.
TOLERANCE = {"bf16": 0.05, "int8-weight": 0.05, "int8-dynamic": 0.1}


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits.float()


@pytest.mark.parametrize("method", ["bf16", "int8-dynamic", "int8-weight", "int4-weight"])
def test_each_quantization_loads_generates_and_stays_close(tiny_model_path, tmp_path, method):
    out = compress(tiny_model_path, tmp_path / method, Compression(method))
    model, tokenizer = load_causal_lm(
        str(out), dtype=torch.float32 if method != "bf16" else torch.bfloat16
    )
    original, _ = load_causal_lm(str(tiny_model_path))
    ids = model.generate(TOKENS, attention_mask=torch.ones_like(TOKENS), max_new_tokens=4,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    assert ids.shape == (1, TOKENS.shape[1] + 4)
    layer = model.model.layers[0].mlp.up_proj
    if method == "bf16":
        assert layer.weight.dtype == torch.bfloat16
        assert (
            load_file(out / "model.safetensors")["model.layers.0.mlp.up_proj.weight"].dtype
            == torch.bfloat16
        )
    elif method.startswith("int8"):
        assert "Int8" in type(layer.weight).__name__  # a torchao int8 tensor
        assert (
            json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"]
            == "torchao"
        )
    else:
        assert type(layer).__name__ == "QLinear" and "4" in str(layer.weight_qtype)  # quanto
        assert type(model.lm_head).__name__ == "Linear"  # the head stays as it is
    reference = logits(original)
    gap = (logits(model) - reference).abs().max() / reference.std()
    if method in TOLERANCE:
        assert gap < TOLERANCE[method], float(gap)
    assert json.loads((out / "compression.json").read_text())["method"] == method


def _linear_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: layer.weight for name, layer in model.named_modules()
            if isinstance(layer, torch.nn.Linear) and "lm_head" not in name}  # fmt: skip


def test_unstructured_pruning_zeros_that_share_of_every_layer(tiny_model_path, tmp_path):
    out = compress(tiny_model_path, tmp_path / "p", Compression("prune", sparsity=0.3))
    model, _ = load_causal_lm(str(out))
    for name, weight in _linear_weights(model).items():
        assert int((weight == 0).sum()) == round(0.3 * weight.numel()), name
    assert json.loads((out / "compression.json").read_text())["measured_sparsity"] == pytest.approx(
        0.3, abs=1e-3
    )
    # Permanent: plain weights, no masks or originals left in the file.
    assert not any(k.endswith(("_orig", "_mask")) for k in load_file(out / "model.safetensors"))


def test_row_pruning_zeros_whole_rows(tiny_model_path):
    model, _ = load_causal_lm(str(tiny_model_path))
    make_pruning_permanent(apply_pruning(model, 0.25, "rows"))
    for name, weight in _linear_weights(model).items():
        zero_rows = int((weight.abs().sum(1) == 0).sum())
        assert zero_rows == round(0.25 * weight.shape[0]), name


def test_head_pruning_zeros_whole_heads(tiny_model_path):
    model, _ = load_causal_lm(str(tiny_model_path))
    heads = model.config.num_attention_heads
    size = model.config.hidden_size // heads
    make_pruning_permanent(apply_pruning(model, 0.5, "heads"))
    for layer in model.model.layers:
        q = layer.self_attn.q_proj.weight.view(heads, size, -1)
        o = layer.self_attn.o_proj.weight.view(-1, heads, size)
        dropped = {h for h in range(heads) if q[h].abs().sum() == 0}
        assert len(dropped) == round(0.5 * heads)
        assert dropped == {h for h in range(heads) if o[:, h].abs().sum() == 0}  # both halves
        assert layer.mlp.up_proj.weight.ne(0).all()  # nothing else touched


@pytest.fixture(scope="module")
def ppo_run(tiny_model_path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ppo")
    return tiny_run("ppo", tiny_model_path, output, "--reward", "length:target=3")


def test_a_compressed_run_is_a_run_that_evaluate_run_evaluates(ppo_run, tmp_path):
    out = compress(ppo_run, tmp_path / "int8", Compression("int8-dynamic"))
    saved = SavedRun.open(out)
    assert saved.algorithm == "ppo" and saved.summary == SavedRun.open(ppo_run).summary
    assert not (out / "policy" / "adapter_config.json").exists()  # the adapter is merged
    script = load_script("evaluate_run")
    metrics = script.main(script.Config(run=out))
    assert 0 <= metrics["eval/reward_mean"] <= 1 and metrics["policy"] == str(out / "policy")
    model, _ = load_causal_lm(str(out / "policy"))  # what --model OUT/policy loads
    assert "Int8" in type(model.model.layers[0].mlp.up_proj.weight).__name__


def test_recovery_fine_tunes_the_pruned_policy_and_keeps_its_zeros(ppo_run, tmp_path):
    half = Compression("prune", sparsity=0.5)
    plain = compress(ppo_run, tmp_path / "pruned", half)
    recovered = Compression("prune", sparsity=0.5, recover_steps=2, recover_lr=1e-3)
    tuned = compress(ppo_run, tmp_path / "recovered", recovered)
    a = load_file(plain / "policy" / "model.safetensors")
    b = load_file(tuned / "policy" / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a[key] == 0, b[key] == 0)  # the same weights pruned, still zero
    assert not torch.equal(a[key], b[key])  # the others fine-tuned
    record = json.loads((tuned / "compression.json").read_text())
    assert record["measured_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert record["seconds"] > 0


@pytest.fixture(scope="module")
def lstm_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    vocab = Vocabulary.build(["i love this day", "this is awful", "a meeting at noon"], min_count=1)
    model = LSTMClassifier(len(vocab), len(LABELS), LSTMSettings(16, 16))
    return save_lstm(tmp_path_factory.mktemp("lstm") / "model", model, vocab, list(LABELS))


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory, tiny_model_path) -> Path:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=3)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model_path))
    model.config.pad_token_id = tokenizer.pad_token_id
    return save_transformer_classifier(
        tmp_path_factory.mktemp("cls") / "model", model, tokenizer, list(LABELS),
        max_length=32, trunk=str(tiny_model_path), tuning="full",
    )  # fmt: skip


TEXTS = ["I love this, what a wonderful day!", "The meeting is at noon.", "This is awful."]


def scores(folder: Path) -> list[float]:
    return ClassifierReward(str(folder), label="positive")([""] * 3, TEXTS)


@pytest.mark.parametrize("method", ["bf16", "prune"])
def test_the_lstm_reward_model_compresses_to_a_reward_model(lstm_folder, tmp_path, method):
    out = compress(lstm_folder, tmp_path / method, Compression(method, sparsity=0.5))
    weights = load_file(out / "model.safetensors")
    if method == "bf16":
        assert {w.dtype for w in weights.values()} == {torch.bfloat16}
        assert scores(out) == pytest.approx(scores(lstm_folder), abs=0.02)
    else:
        recurrent = weights["lstm.weight_hh_l0"]
        assert int((recurrent == 0).sum()) == round(0.5 * recurrent.numel())
        assert all(0 <= s <= 1 for s in scores(out))


def test_int8_refuses_the_lstm_and_writes_nothing(lstm_folder, tmp_path):
    with pytest.raises(ConfigError, match="LSTM reward model takes --method bf16 or prune"):
        compress(lstm_folder, tmp_path / "q", Compression("int8-dynamic"))
    assert list(tmp_path.iterdir()) == []


def test_a_classifier_reward_model_quantized_to_int8_scores_as_before(classifier_folder, tmp_path):
    out = compress(classifier_folder, tmp_path / "q", Compression("int8-weight"))
    assert (out / "rlm_reward.json").is_file()
    assert scores(out) == pytest.approx(scores(classifier_folder), abs=0.02)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "int3"], "unknown compression method 'int3'"),
        (["--method", "prune", "--sparsity", "1.0"], "--sparsity must be in [0, 1)"),
        (["--method", "prune", "--structure", "blocks"], "--structure must be"),
        (["--method", "bf16", "--recover-steps", "3"], "use it with --method prune"),
        (["--method", "prune", "--recover-steps", "3"], "pass a run folder"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_model_path, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert rlm_main(["compress", str(tiny_model_path), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_folder_of_no_known_kind_and_an_existing_output_are_refused(
    tmp_path, tiny_model_path, capsys
):
    (tmp_path / "notes").mkdir()
    assert (
        rlm_main(
            ["compress", str(tmp_path / "notes"), "--method", "bf16", "-o", str(tmp_path / "o")]
        )
        == 2
    )
    assert (
        "neither a run folder, a model folder nor a reward-model folder" in capsys.readouterr().err
    )
    (tmp_path / "taken").mkdir()
    assert (
        rlm_main(
            ["compress", str(tiny_model_path), "--method", "bf16", "-o", str(tmp_path / "taken")]
        )
        == 2
    )
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "taken"]
    assert sparsity_of(load_causal_lm(str(tiny_model_path))[0]) == 0.0


def test_the_benchmark_measures_policies_and_reward_models_side_by_side(
    ppo_run, lstm_folder, tmp_path
):
    script = load_script("benchmark_compression")
    config = script.Config(
        runs=[ppo_run], reward_models=[lstm_folder], arms=["bf16", "prune:sparsity=0.5"],
        work_dir=tmp_path / "work", report=tmp_path / "report.md", threads=1,
        perplexity_texts=8, scoring_texts=64,
    )  # fmt: skip
    script.main(config)
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    policies = {row["arm"]: row for row in results["policies"]}
    assert list(policies) == ["uncompressed", "bf16", "prune:sparsity=0.5"]
    assert policies["uncompressed"]["kl_to_uncompressed"] == pytest.approx(0.0, abs=1e-3)
    assert policies["uncompressed"]["reward"] == pytest.approx(
        SavedRun.open(ppo_run).summary["eval_reward_after"], abs=1e-6
    )  # the run's own evaluation, repeated
    assert policies["bf16"]["size_mb"] < 0.7 * policies["uncompressed"]["size_mb"]
    for row in results["policies"]:
        assert row["perplexity"] > 1 and row["tokens_per_s"] > 0 and row["peak_mb"] > 100
    models = {row["arm"]: row for row in results["reward_models"]}
    assert list(models) == ["uncompressed", "bf16", "prune:sparsity=0.5"]  # no int8 for LSTM
    assert sum(map(sum, models["bf16"]["confusion"])) == 3450  # the whole test split
    assert "| bf16 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").stat().st_size > 1000

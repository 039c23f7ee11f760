"""The text path: the decoder alone on real IU X-Ray reports with their findings prompt (no image
read, encoder and heads untouched), frozen parts, oversampled reports with findings, prompt
noise, and the findings-given scoring of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from training.train.loop import Trainer
from training.train.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[2]
DECODER = REPO / "config" / "training" / "decoder.toml"


def text_overrides(shared: Path, out: Path, **extra: Any) -> list[str]:
    values: dict[str, Any] = {
        "model.name": "cxr_tiny",
        "data.iu_root": str(shared / "iu_xray"),
        "data.max_train_reports": 24,
        "data.max_val_reports": 8,
        "text.vocab_size": 200,
        "text.max_tokens": 40,
        "optim.report_batch_size": 8,
        "optim.epochs": 3,
        "optim.warmup_steps": 1,
        "optim.lr": 3e-3,
        "run.out_dir": str(out),
        "run.log_every": 1,
        "run.progress": False,
        "run.threads": 1,
        "run.tensorboard": False,
        "export.purpose": "test",
        **extra,
    }
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


@pytest.fixture(scope="module")
def text_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("text") / "run"
    recipe = load_recipe(DECODER, text_overrides(shared_data, out))
    trainer = Trainer(recipe)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    return {"recipe": recipe, "result": result, "before": before, "trainer": trainer}


def test_text_path_trains_the_decoder_and_prompt_only(text_run: dict[str, Any]) -> None:
    trainer, before = text_run["trainer"], text_run["before"]
    assert trainer.data.train_images is None and trainer.data.val_images is None
    assert trainer.model.config.decoder_memory == ("findings",)
    after = trainer.model.state_dict()
    untouched = [k for k in after if k.startswith(("encoder.", "finding_head", "box_head"))]
    assert untouched and all(torch.equal(after[k], before[k]) for k in untouched)
    trained = ["decoder.embed.weight", "decoder.layers.0.cross_attn.q.weight", "finding_embed",
               "state_embed.weight"]
    assert all(not torch.equal(after[k], before[k]) for k in trained)
    history = text_run["result"].history
    assert history and "val/lm_loss" in history[-1] and "val/findings_auroc" not in history[-1]
    assert history[-1]["val/lm_loss"] < history[0]["val/lm_loss"]


def test_text_path_needs_the_finding_set(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"data\.findings"):
        load_recipe(DECODER, [*text_overrides(shared_data, tmp_path), "data.findings=[]"])


def test_frozen_parts_stay_as_the_init_checkpoint_left_them(
    text_run: dict[str, Any], shared_data: Path, tmp_path: Path
) -> None:
    source = text_run["result"].best_checkpoint
    recipe = load_recipe(DECODER, text_overrides(
        shared_data, tmp_path, **{
            "model.init_checkpoint": str(source),
            "model.trainable": ["decoder.embed.*", "decoder.layers.*.cross_attn.*"],
            "optim.epochs": 1,
        }))
    trainer = Trainer(recipe)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert {n for n, _ in trainer.trainable} == {
        "decoder.embed.weight",
        *(f"decoder.layers.{i}.cross_attn.{p}.{w}" for i in range(2)
          for p in ("q", "kv", "out") for w in ("weight", "bias")),
    }
    trainer.fit()
    after = trainer.model.state_dict()
    assert torch.equal(after["decoder.layers.0.self_attn.qkv.weight"],
                       start["decoder.layers.0.self_attn.qkv.weight"])
    assert torch.equal(after["finding_embed"], start["finding_embed"])
    assert not torch.equal(after["decoder.layers.1.cross_attn.kv.weight"],
                           start["decoder.layers.1.cross_attn.kv.weight"])
    with pytest.raises(Exception, match="matches no parameter"):
        Trainer(load_recipe(DECODER, text_overrides(
            shared_data, tmp_path / "x", **{"model.trainable": ["nothing.*"]})))


def test_reports_with_findings_are_oversampled_and_prompt_noise_is_seeded(
    shared_data: Path, tmp_path: Path
) -> None:
    from engine.artifact import PROMPT_STATES
    from training.train.data import Reports, build_data, input_spec

    recipe = load_recipe(DECODER, text_overrides(
        shared_data, tmp_path, **{"data.max_train_reports": 200,
                                  "data.oversample_findings": 3, "text.prompt_noise": 0.3}))
    data = build_data(recipe, input_spec(64, 1), None)
    reports = data.train_reports
    assert isinstance(reports, Reports)
    present = PROMPT_STATES.index("present")
    keys = list(data.keys)
    with_findings = [
        row for row in range(len(reports.records))
        if any(s == present for k, s in zip(keys, reports.states[row].tolist(), strict=True)
               if k != "no_finding")
    ]
    assert with_findings, "the first 200 IU X-Ray training reports name a finding"
    assert len(reports) == len(reports.records) + 2 * len(with_findings)
    assert all(reports.rows.count(row) == 3 for row in with_findings)
    pairs = [(i, 1) for i in range(16)]
    noisy = reports.batch(pairs)["states"]
    assert torch.equal(noisy, reports.batch(pairs)["states"])  # (seed, epoch, sample) only
    clean = reports.states[[reports.rows[i] for i, _ in pairs]]
    assert not torch.equal(noisy, clean)
    assert data.val_reports is not None and len(data.val_reports) == len(data.val_reports.records)


def test_findings_given_scores_a_checkpoint_beside_its_baselines(
    text_run: dict[str, Any], shared_data: Path
) -> None:
    from training.train.decoder_eval import (
        baseline_texts,
        checked_texts,
        findings_given,
        generate_texts,
        load_checkpoint_model,
        score_texts,
    )

    given = findings_given(shared_data / "iu_xray", text_run["recipe"].data.findings, limit=24)
    assert len(given.records) == 24 and all(given.references)
    model, tokenizer = load_checkpoint_model(text_run["result"].best_checkpoint)
    texts = generate_texts(model, tokenizer, given.states, max_length=30)
    assert len(texts) == 24 and all("Hallazgos" in t or "Impresión" in t for t in texts)
    scores = score_texts(given, texts, n_resamples=50)
    assert scores["n"] == 24 and 1 <= scores["distinct"] <= 24
    for name in ("micro_f1", "macro_f1", "bleu4", "cider", "check_replaced"):
        low, estimate, high = scores[name][1], scores[name][0], scores[name][2]
        assert low <= estimate <= high, name
    baselines = {k: score_texts(given, v, n_resamples=50) for k, v in baseline_texts(given).items()}
    assert baselines["constant_normal"]["distinct"] == 1
    # The structured writer says every prompt finding: it never contradicts them.
    assert baselines["structured"]["check_replaced"][0] == 0.0
    assert baselines["structured"]["macro_f1"][0] > baselines["constant_normal"]["macro_f1"][0]
    # With the check, what the engine shows never contradicts the prompt.
    shown = checked_texts(given, texts, baseline_texts(given)["structured"])
    assert score_texts(given, shown, n_resamples=50)["check_replaced"][0] == 0.0
    assert sum(a != b for a, b in zip(shown, texts, strict=True)) == round(
        scores["check_replaced"][0] * 24)


def test_prompt_tokens_of_different_findings_differ_from_the_start() -> None:
    """The finding's embedding is at the state's scale: before, every finding's "present"
    token was the same after the norm (cosine 0.9995 in the first engine), so the decoder
    could not tell which finding the prompt named."""
    from torch.nn.functional import normalize

    from engine.artifact import PROMPT_STATES
    from training.models.registry import create_model

    model = create_model("cxr_small", num_findings=6, num_locatable=4, vocab_size=64,
                         decoder_memory=("findings",))
    present = PROMPT_STATES.index("present")
    with torch.no_grad():
        tokens = normalize(model.prompt_memory(torch.full((1, 6), present))[0], dim=1)
    cosine = tokens @ tokens.T
    assert float(cosine[~torch.eye(6, dtype=torch.bool)].max()) < 0.8


def test_a_text_path_decoder_goes_beside_an_engine_encoder(
    text_run: dict[str, Any], tmp_path: Path
) -> None:
    """``with_decoder``: encoder and heads from the engine's checkpoint, decoder, prompt and
    tokenizer from the text run; another finding set is refused."""
    from training.exceptions import TrainingError
    from training.train.checkpoint import DECODER_PARTS, with_decoder

    decoder_ckpt = text_run["result"].best_checkpoint
    text = torch.load(decoder_ckpt, weights_only=True)
    engine = dict(text)
    torch.manual_seed(5)
    engine["state_dict"] = {k: torch.randn_like(v) if v.is_floating_point() else v
                            for k, v in text["state_dict"].items()}
    engine["model_config"] = {**text["model_config"], "vocab_size": 77}
    engine["state_dict"]["decoder.embed.weight"] = torch.randn(77, 32)
    engine["state_dict"]["decoder.lm_head.weight"] = engine["state_dict"]["decoder.embed.weight"]
    engine_ckpt = tmp_path / "engine.pt"
    torch.save(engine, engine_ckpt)
    model, tokenizer = with_decoder(engine_ckpt, decoder_ckpt)
    assert tokenizer.get_vocab() == text_run["trainer"].data.tokenizer.get_vocab()
    for name, value in model.state_dict().items():
        source = text if name.startswith(DECODER_PARTS) else engine
        assert torch.equal(value, source["state_dict"][name]), name
    torch.save({**engine, "finding_keys": list(reversed(engine["finding_keys"]))}, engine_ckpt)
    with pytest.raises(TrainingError, match="finding set"):
        with_decoder(engine_ckpt, decoder_ckpt)


def test_a_text_run_keeps_the_box_counts_of_the_encoder_it_starts_from(
    text_run: dict[str, Any], shared_data: Path, tmp_path: Path
) -> None:
    """Its checkpoint exports beside that encoder, so the regions withheld stay withheld."""
    state = torch.load(text_run["result"].best_checkpoint, weights_only=True)
    assert state["box_counts"] is None  # started from nothing: no box head was taught
    state["box_counts"] = {"pneumonia": 3}
    source = tmp_path / "encoder.pt"
    torch.save(state, source)
    recipe = load_recipe(DECODER, text_overrides(
        shared_data, tmp_path / "run", **{"model.init_checkpoint": str(source)}))
    assert Trainer(recipe).checkpoint_dict()["box_counts"] == {"pneumonia": 3}

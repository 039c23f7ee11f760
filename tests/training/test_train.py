"""``training train`` on real shared data (a handful of NIH images and IU X-Ray reports): the
loss falls, a resumed run continues bit for bit, the effective recipe is written, the early
stopping and validation run, and the exported engine reports a real DICOM study through the
node's worker."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from training.train.checkpoint import TOKEN_ROWS
from training.train.loop import Trainer, train
from training.train.recipe import load_recipe, recipe_to_toml

REPO = Path(__file__).resolve().parents[2]
UNPAIRED = REPO / "config" / "training" / "unpaired.toml"


def tiny_overrides(shared: Path, out: Path, **extra: Any) -> list[str]:
    """The unpaired recipe shrunk to seconds: 16 NIH images, 16 IU reports, 64x64 model."""
    values: dict[str, Any] = {
        "model.name": "cxr_tiny",
        "data.nih_root": str(shared / "nih"),
        "data.iu_root": str(shared / "iu_xray"),
        "data.max_train_images": 16,
        "data.max_train_reports": 16,
        "data.max_val_images": 16,
        "data.max_val_reports": 8,
        "text.vocab_size": 200,
        "text.max_tokens": 40,
        "optim.batch_size": 8,
        "optim.report_batch_size": 8,
        "optim.epochs": 4,
        "optim.warmup_steps": 1,
        "optim.lr": 3e-3,
        "run.out_dir": str(out),
        "run.log_every": 1,
        "run.progress": False,
        "run.threads": 1,
        "run.early_stopping.patience": 10,
        "export.purpose": "test",
        **extra,
    }
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def _standin_spanish_target(report_text: str) -> str | None:
    """Test stand-in for issue 9's English-to-Spanish bridge: one Spanish sentence per finding
    the English labeler reads in the report (the finding set's Spanish names)."""
    from engine.labeler import get_labeler
    from training.findings import FINDINGS_BY_KEY

    found = get_labeler("en").label(report_text, sections=False)
    sentences = []
    for key, presence in sorted(found.items()):
        name = FINDINGS_BY_KEY[key].name_es.lower()
        if key == "no_finding":
            continue
        if presence == "present":
            sentences.append(f"Se observa {name}.")
        elif presence == "absent":
            sentences.append(f"No se observa {name}.")
        else:
            sentences.append(f"Posible {name}.")
    return " ".join(sentences) or "Sin hallazgos patológicos."


def real_bridge_installed() -> bool:
    saved = sys.modules.pop("training.bridge", None)
    try:
        return importlib.util.find_spec("training.bridge") is not None
    finally:
        if saved is not None:
            sys.modules["training.bridge"] = saved


@pytest.fixture(scope="module")
def spanish_bridge() -> Iterator[None]:
    """The real bridge when installed (after issue 9 merges), else the stand-in above."""
    if real_bridge_installed():
        yield
        return
    module = types.ModuleType("training.bridge")
    module.spanish_target = _standin_spanish_target  # type: ignore[attr-defined]
    sys.modules["training.bridge"] = module
    try:
        yield
    finally:
        del sys.modules["training.bridge"]


def read_steps(out: Path) -> list[dict[str, str]]:
    with (out / "steps.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def unpaired_run(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, spanish_bridge: None
) -> dict[str, Any]:
    """8 steps (4 epochs of 2), a checkpoint every 4 steps, Spanish targets, exported as a
    test artifact."""
    base = tmp_path_factory.mktemp("unpaired")
    recipe = load_recipe(
        UNPAIRED,
        tiny_overrides(
            shared_data, base / "run", **{"run.checkpoint_every": 4, "text.language": "es"}
        ),
    )
    result = train(recipe, export=base / "artifact")
    return {"recipe": recipe, "result": result, "base": base}


def test_recipe_overrides_validate_and_round_trip(tmp_path: Path) -> None:
    recipe = load_recipe(UNPAIRED, ["optim.lr=1e-4", "run.out_dir=runs/x", 'text.language="es"'])
    assert recipe.optim.lr == 1e-4 and str(recipe.run.out_dir) == "runs/x"
    assert recipe.text.language == "es"
    path = tmp_path / "again.toml"
    path.write_text(recipe_to_toml(recipe))
    assert load_recipe(path) == recipe
    from training.train.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"optim\.lr"):
        load_recipe(UNPAIRED, ["optim.lr=-1"])
    with pytest.raises(RecipeError, match=r"optim\.nonsense"):
        load_recipe(UNPAIRED, ["optim.nonsense=1"])
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe(UNPAIRED, ["optim.lr"])


def test_unpaired_run_learns_validates_and_writes_its_outputs(unpaired_run: dict[str, Any]) -> None:
    result = unpaired_run["result"]
    out = result.out_dir
    rows = read_steps(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    first = [float(r["train/lm"]) for r in rows[:2]]
    last = [float(r["train/lm"]) for r in rows[-2:]]
    assert sum(last) < sum(first) - 0.1, (first, last)
    total_first = sum(float(r["train/loss"]) for r in rows[:2])
    total_last = sum(float(r["train/loss"]) for r in rows[-2:])
    assert total_last < total_first
    # Boxes are trained where NIH has them; the findings loss runs every step.
    assert all(r["train/findings"] for r in rows)
    assert any(float(r["train/boxes"]) > 0 for r in rows)
    # The effective recipe, per-epoch validation, TensorBoard events and checkpoints.
    assert load_recipe(out / "recipe.toml") == unpaired_run["recipe"]
    with (out / "epochs.csv").open(newline="") as fh:
        epochs = list(csv.DictReader(fh))
    assert len(epochs) == 4 and all(0 <= float(e["val/findings_auroc"]) <= 1 for e in epochs)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    validation = json.loads((out / "validation.json").read_text())
    assert "val/findings_auroc" in validation["metrics"] and "val/lm_loss" in validation["metrics"]
    assert {p.name for p in (out / "checkpoints").iterdir()} >= {
        "best.pt",
        "last.pt",
        "step-0000004.pt",
        "step-0000008.pt",
    }


def test_resume_continues_bit_for_bit(
    unpaired_run: dict[str, Any], tmp_path: Path, spanish_bridge: None
) -> None:
    base: Path = unpaired_run["base"]
    original = base / "run"
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    # The interrupted run's outputs up to step 4, as a crash after that checkpoint leaves them.
    shutil.copy(original / "steps.csv", resumed / "steps.csv")
    recipe = unpaired_run["recipe"].model_copy(deep=True)
    recipe.run.out_dir = resumed
    trainer = Trainer(recipe, resume=original / "checkpoints" / "step-0000004.pt")
    assert trainer.step == 4
    trainer.fit()
    want = torch.load(original / "checkpoints" / "step-0000008.pt", weights_only=True)
    got = torch.load(resumed / "checkpoints" / "step-0000008.pt", weights_only=True)
    for key, tensor in want["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][key]), key
    for group_want, group_got in zip(
        want["optimizer"]["state"].values(), got["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(group_want["exp_avg"], group_got["exp_avg"])
    assert read_steps(resumed) == read_steps(original)


def test_exported_engine_reports_a_real_dicom_study_through_the_worker(
    unpaired_run: dict[str, Any], dicom_dir: Path, tmp_path: Path
) -> None:
    from dicomnode.db import StudyState
    from dicomnode.server import ReceivingNode
    from dicomnode.worker import ReportingWorker
    from engine.artifact import load_artifact
    from engine.runtime import create_engine
    from tests.e2e.conftest import FAST, drain, output_files, studies, wait_until
    from tests.node.conftest import node_config, renamed_copy, send_datasets

    artifact = load_artifact(unpaired_run["result"].artifact)
    manifest = artifact.manifest
    assert manifest.format_version == "1.2" and manifest.languages == ("es",)
    assert manifest.training.path == "unpaired"
    assert any(d.startswith("nih:train") for d in manifest.training.datasets)
    assert manifest.decoder.memory == ("findings",) and manifest.prompt is not None
    assert manifest.input.train_letterbox == "random-aspect"  # the recipe's train-time letterbox
    # The engine scores only what its training images were labeled for (NIH's findings).
    from training.label_maps import NIH_TO_KEY

    assert {f.key for f in manifest.findings} <= set(NIH_TO_KEY.values())
    with pytest.raises(Exception, match="test artifact"):
        create_engine(artifact, "onnxruntime")  # a few-step engine never reports on patients
    engine = create_engine(artifact, "onnxruntime", allow_test_artifact=True, max_length=16)

    node = ReceivingNode(node_config(tmp_path / "data", **FAST))
    node.start()
    try:
        ds = renamed_copy(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm")
        assert send_datasets(node.port, [ds]) == [0]
        wait_until(
            lambda: [s.state for s in studies(node.sessions).values()] == [StudyState.QUEUED],
            "the study queued",
        )
        worker = ReportingWorker(node.config, node.sessions, engine, worker_id="train-test")
        assert drain(worker) == 1
        study = studies(node.sessions)[ds.StudyInstanceUID]
        assert study.state == StudyState.REPORTED, study.error
        assert output_files(node.data_dir)
        report = engine.report_study([ds])
        assert report.language == "es" and report.sections
    finally:
        node.stop()


def test_training_targets_decode_into_hallazgos_and_impresion(
    unpaired_run: dict[str, Any],
) -> None:
    """The run's own report targets, through the exported engine's tokenizer and manifest,
    split into the sections the SR writes."""
    from tokenizers import Tokenizer

    from engine.artifact import load_artifact
    from engine.text import ReportTokenizer
    from training.models.tokenizer import IMPRESSION_SECTION, encode_report, token_id
    from training.train.data import ReportTarget, build_data, input_spec

    runtime = ReportTokenizer(load_artifact(unpaired_run["result"].artifact))
    state = torch.load(unpaired_run["result"].best_checkpoint, weights_only=True)
    tokenizer = Tokenizer.from_str(state["tokenizer"])
    findings, impression = "Derrame pleural derecho.", "Sin neumotórax."
    ids = encode_report(tokenizer, findings, impression)
    assert runtime.sections(ids) == (("Hallazgos", findings), ("Impresión", impression))
    assert runtime.sections(encode_report(tokenizer, "", impression)) == (
        ("Impresión", impression),
    )
    # Written impression first, shown in reading order.
    only_impression = encode_report(tokenizer, "", impression)
    swapped = [ids[0], *only_impression[1:-1], *encode_report(tokenizer, findings)[1:-1], ids[-1]]
    assert runtime.sections(swapped) == runtime.sections(ids)
    # Targets trained before impressions were kept apart: one run of text, all Hallazgos.
    joined = ReportTarget(findings, impression).text
    assert runtime.sections(encode_report(tokenizer, joined)) == (("Hallazgos", joined),)
    # The run's training reports carry the impression token where they have one.
    recipe = unpaired_run["recipe"]
    data = build_data(recipe, input_spec(64, 1, recipe.input), state["tokenizer"])
    reports = data.train_reports
    assert reports is not None
    impression_id = token_id(tokenizer, IMPRESSION_SECTION)
    with_impression = [ids for ids in reports.ids if impression_id in ids]
    assert with_impression  # (the tiny recipe's 40 tokens cut most impressions off)
    for ids in with_impression:
        assert [title for title, _ in runtime.sections(ids)] == ["Hallazgos", "Impresión"]


def test_spanish_targets_without_the_bridge_fail_clearly(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if real_bridge_installed():
        pytest.skip("the English-to-Spanish bridge is installed")
    monkeypatch.delitem(sys.modules, "training.bridge", raising=False)
    from training.exceptions import TrainingError

    recipe = load_recipe(UNPAIRED, tiny_overrides(shared_data, tmp_path, **{"text.language": "es"}))
    with pytest.raises(TrainingError, match=r"training\.bridge.*text\.language = \"en\""):
        Trainer(recipe)


def test_training_export_cli_reads_a_training_checkpoint(
    unpaired_run: dict[str, Any], tmp_path: Path
) -> None:
    from engine.artifact import load_artifact
    from training.cli import main

    best = unpaired_run["result"].best_checkpoint
    out = tmp_path / "engine"
    assert main(["export", str(best), str(out), "--name", "x", "--version", "1",
                 "--purpose", "test"]) == 0
    manifest = load_artifact(out).manifest
    state = torch.load(best, weights_only=True)
    assert manifest.languages == ("es",) and manifest.training.path == "unpaired"
    assert manifest.input.train_letterbox == "random-aspect"  # from the checkpoint's input spec
    for spec in manifest.findings:
        assert (spec.threshold_present, spec.threshold_absent) == tuple(
            state["thresholds"][spec.key]
        )


def test_early_stopping_ends_the_run(shared_data: Path, tmp_path: Path) -> None:
    # The report LM loss falls, so "max" never improves after the first epoch.
    extra = {"optim.epochs": 4, "text.language": "en", "run.tensorboard": False,
             "run.early_stopping.metric": "val/lm_loss", "run.early_stopping.mode": "max",
             "run.early_stopping.patience": 1, "data.max_val_images": 8}
    result = train(load_recipe(UNPAIRED, tiny_overrides(shared_data, tmp_path, **extra)))
    assert result.steps == 4  # 2 of 4 epochs of 2 steps
    assert [h["epoch"] for h in result.history] == [0.0, 1.0]
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["step"] == 2


def test_spanish_transfer_starts_from_a_trained_checkpoint(
    unpaired_run: dict[str, Any], shared_data: Path, tmp_path: Path, spanish_bridge: None
) -> None:
    source = unpaired_run["result"].best_checkpoint
    recipe = load_recipe(REPO / "config" / "training" / "spanish_transfer.toml", [
        *tiny_overrides(shared_data, tmp_path, **{"text.vocab_size": 150}),
        f"model.init_checkpoint={json.dumps(str(source))}",
    ])
    trainer = Trainer(recipe)
    want = torch.load(source, weights_only=True)["state_dict"]
    got = trainer.model.state_dict()
    assert {"finding_head.weight", "decoder.layers.0.self_attn.qkv.weight"} <= set(
        trainer.transferred
    )
    for name in trainer.transferred:
        if name not in TOKEN_ROWS:
            assert torch.equal(got[name], want[name]), name
    # Another tokenizer: only the rows of the tokens both share come along, by token string.
    from tokenizers import Tokenizer

    old = Tokenizer.from_str(torch.load(source, weights_only=True)["tokenizer"]).get_vocab()
    new = trainer.data.tokenizer.get_vocab()
    assert old != new
    for token, row in new.items():
        got_row = got["decoder.embed.weight"][row]
        same = token in old and torch.equal(got_row, want["decoder.embed.weight"][old[token]])
        assert same == (token in old), token


def test_a_run_records_its_boxes_and_export_reports_regions_only_where_taught(
    unpaired_run: dict[str, Any],
) -> None:
    from engine.artifact import load_artifact

    result = unpaired_run["result"]
    state = torch.load(result.best_checkpoint, weights_only=True)
    counts = state["box_counts"]
    manifest = load_artifact(result.artifact).manifest
    locatable = {f.key for f in manifest.findings if f.locatable}
    assert set(counts) == locatable and all(isinstance(n, int) for n in counts.values())
    minimum = unpaired_run["recipe"].export.min_region_boxes
    for spec in manifest.findings:
        assert spec.report_region == (not spec.locatable or counts[spec.key] >= minimum)


def test_finding_specs_report_no_region_below_the_minimum_of_training_boxes() -> None:
    from training.export import finding_specs
    from training.findings import get_finding

    findings = [get_finding(k) for k in ("pneumonia", "pleural_effusion", "edema")]
    specs = {s.key: s for s in finding_specs(findings, None, {"pneumonia": 60}, 50)}
    assert specs["pneumonia"].report_region
    assert not specs["pleural_effusion"].report_region  # locatable, no box in training
    assert specs["edema"].report_region  # not locatable: nothing to withhold
    # A checkpoint without counts (written before they were recorded) keeps regions.
    assert all(s.report_region for s in finding_specs(findings))

"""The paired recipe end to end on an IU X-Ray R2Gen layout: findings (labels from the
report), contrastive alignment, and the report LM attending to image tokens and the prompt.

The shared data holds IU X-Ray's reports but not its images, so this layout pairs real IU
reports with real NIH radiographs as stand-in images: it checks the code path (every objective
trains, the loss falls, the export serves image + prompt memory), not what the pairing means.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.training.test_train import REPO, read_steps
from training.train.loop import train
from training.train.recipe import load_recipe

PAIRED = REPO / "config" / "training" / "paired.toml"


@pytest.fixture
def r2gen_layout(shared_data: Path, tmp_path: Path) -> Path:
    annotation = json.loads((shared_data / "iu_xray" / "r2gen_split_annotation.json").read_text())
    nih = sorted((shared_data / "nih" / "images_512").glob("*.jpg"))
    root = tmp_path / "iu_r2gen"
    out: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    picked = [("train", e) for e in annotation["train"][:12]]
    picked += [("val", e) for e in annotation["val"][:6]]
    for (split, entry), image in zip(picked, nih, strict=False):
        rel = f"{entry['id']}/0.png"
        (root / "images" / entry["id"]).mkdir(parents=True)
        Image.open(image).save(root / "images" / rel)
        out[split].append({"id": entry["id"], "report": entry["report"], "image_path": [rel]})
    (root / "annotation.json").write_text(json.dumps(out))
    return root


def test_paired_recipe_trains_every_objective_and_exports(r2gen_layout: Path,
                                                           tmp_path: Path) -> None:
    values = {
        "model.name": "cxr_tiny", "model.options.num_views": 1,
        "data.iu_root": str(r2gen_layout), "text.vocab_size": 200, "text.max_tokens": 40,
        "optim.batch_size": 6, "optim.epochs": 3, "optim.warmup_steps": 1, "optim.lr": 3e-3,
        "run.out_dir": str(tmp_path / "run"), "run.log_every": 1, "run.progress": False,
        "run.threads": 1, "run.tensorboard": False, "run.early_stopping.patience": 10,
        "export.purpose": "test",
    }
    recipe = load_recipe(PAIRED, [f"{k}={json.dumps(v)}" for k, v in values.items()])
    result = train(recipe, export=tmp_path / "engine")
    rows = read_steps(result.out_dir)
    assert len(rows) == 6
    assert all(float(r["train/contrastive"]) > 0 and float(r["train/findings"]) > 0
               for r in rows)
    assert float(rows[-1]["train/lm"]) < float(rows[0]["train/lm"])
    with (result.out_dir / "epochs.csv").open(newline="") as fh:
        assert all(float(e["val/lm_loss"]) > 0 for e in csv.DictReader(fh))

    from engine.artifact import load_artifact

    manifest = load_artifact(tmp_path / "engine").manifest
    assert manifest.training.path == "paired"
    assert manifest.decoder.memory == ("image", "findings") and manifest.languages == ("en",)


def test_a_refused_image_leaves_its_study_out_report_included(r2gen_layout: Path,
                                                               tmp_path: Path) -> None:
    from training.train.data import build_data, input_spec

    annotation = json.loads((r2gen_layout / "annotation.json").read_text())
    first = annotation["train"][0]
    thumbnail = r2gen_layout / "images" / first["image_path"][0]
    Image.open(thumbnail).resize((64, 64)).save(thumbnail)  # below the engine's 128 px
    values = {"data.iu_root": str(r2gen_layout), "text.vocab_size": 200,
              "run.out_dir": str(tmp_path / "run")}
    recipe = load_recipe(PAIRED, [f"{k}={json.dumps(v)}" for k, v in values.items()])
    data = build_data(recipe, input_spec(64, 1, recipe.input), None)
    pairs = data.train_pairs
    assert pairs is not None and pairs.images.skipped == 1
    assert len(pairs.images) == len(pairs.reports) == len(annotation["train"]) - 1
    assert first["id"] not in {r.study_id for r in pairs.reports.records}
    assert [r.study_id for r in pairs.images.records] == [r.study_id for r in pairs.reports.records]

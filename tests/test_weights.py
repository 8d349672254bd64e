"""The shipped default weights agree with the records kept beside them in weights/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.crossval import calibration_from_report, check_same_recipe, validation_summary
from model.dataset import read_manifest
from model.network import read_checkpoint
from model.training import TrainConfig

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = WEIGHTS / "ffpp_c23_train_clips.csv"


@pytest.fixture(scope="module")
def shipped():
    model, metadata = read_checkpoint(WEIGHTS / "detector.pt")
    report = json.loads((WEIGHTS / "crossval" / "crossval.json").read_text())
    record = json.loads((WEIGHTS / "detector.train.json").read_text())
    return model.config, metadata, report, record


def test_the_default_states_the_shipped_cross_validation_and_is_calibrated_on_it(shipped):
    config, metadata, report, record = shipped
    assert metadata["validation"] == validation_summary(report) == record["validation"]
    temperature, bias = calibration_from_report(report)
    assert config.temperature == pytest.approx(temperature, abs=1e-9)
    assert config.extra["logit_bias"] == pytest.approx(bias, abs=1e-9)
    assert record["calibration"] == {"temperature": config.temperature, "logit_bias": config.extra["logit_bias"]}


def test_the_default_learnt_the_cross_validated_recipe_from_every_clip_of_the_manifest(shipped):
    _, metadata, report, record = shipped
    recipe = TrainConfig(**{**record["train_config"], "manifest": str(MANIFEST)})
    clips = read_manifest(MANIFEST)
    check_same_recipe(report, recipe, clips)  # raises on another recipe or other clips
    assert record["validation_clips"] == [] and metadata["best_step"] == recipe.steps
    assert sorted(metadata["trained_on"]) == sorted(Path(c.path).name for c in clips)

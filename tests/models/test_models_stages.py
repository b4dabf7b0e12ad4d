"""signatures -> combined -> evaluate on a small synthetic cohort, through the stages' own code and config."""

from __future__ import annotations

import json
import re

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from synthetic_cohort import compose_config, tiny_overrides

from cagerisk.models.served import CombinedModel
from cagerisk.stages.combined import run_combined_stage
from cagerisk.stages.evaluate import run_evaluate_stage
from cagerisk.stages.signatures import run_signatures_stage


@pytest.fixture(scope="module")
def stages(synthetic_root):
    cfg = compose_config(tiny_overrides(synthetic_root))
    signatures = run_signatures_stage(cfg)
    combined = run_combined_stage(cfg)
    metrics = run_evaluate_stage(cfg)
    return cfg, signatures, combined, metrics


def test_signatures_outputs(stages, synthetic_root):
    cfg, summary, _, _ = stages
    out = synthetic_root / "models" / "signatures"
    scores = pd.read_parquet(out / "scores.parquet")
    assert list(scores.columns) == ["patient_id", "split", "cs", "rad_sign", "dl_sign"]
    assert ((scores[["rad_sign", "dl_sign"]] >= 0) & (scores[["rad_sign", "dl_sign"]] <= 1)).all().all()
    for target in ("rad", "dl"):
        entry = summary["signatures"][target]
        selection = pd.read_csv(out / f"{target}_selection.csv")
        assert list(selection["step"]) == (
            ["impute", "scale", "ftest", "pearson", "lasso"]
            if target == "rad"
            else ["impute", "reduce", "ftest", "pearson", "lasso"]
        )
        assert (selection["n_removed"] >= 0).all()
        assert entry["n_trials_total"] == 4 and entry["best_classifier"] in {"lr", "nb", "dt"}
        pipeline = joblib.load(out / f"{target}_pipeline.joblib")
        train = scores["split"] == "train"
        table = pd.read_parquet(
            synthetic_root / "features" / ("radiomics.parquet" if target == "rad" else "deep.parquet")
        ).set_index("patient_id")
        X = table.loc[scores["patient_id"]]
        column = f"{target}_sign"
        # Held-out scores are the fitted pipeline's; training scores are out-of-fold, not in-sample.
        np.testing.assert_allclose(scores.loc[~train, column], pipeline.predict_proba(X[~train.to_numpy()])[:, 1])
        assert not np.allclose(scores.loc[train, column], pipeline.predict_proba(X[train.to_numpy()])[:, 1])
    # The planted near-duplicate column is pruned or never selected alongside its twin.
    rad_features = pd.read_csv(out / "rad_features.csv")["feature"].tolist()
    assert not {"t2_disc_original_firstorder_F0", "t2_disc_original_firstorder_F6"} <= set(rad_features)
    # The signal of the synthetic cohort is found (held-out AUC well above chance).
    held = scores["split"] != "train"
    assert roc_auc_score(scores.loc[held, "cs"], scores.loc[held, "rad_sign"]) > 0.7


def test_each_trial_is_a_nested_mlflow_run(stages, synthetic_root):
    cfg, _, _, _ = stages
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="pandas")
    stage_runs = runs[runs["tags.cagerisk.stage"] == "signatures"]
    assert len(stage_runs) >= 1
    parent = stage_runs.iloc[0]["run_id"]
    trials = runs[runs["tags.mlflow.parentRunId"] == parent]
    assert len(trials) == 8  # 4 trials x (rad, dl)
    assert set(trials["tags.cagerisk.target"]) == {"rad", "dl"}
    assert trials["metrics.cv_auc"].notna().all()


def test_combined_model_outputs_and_serving_function(stages, synthetic_root):
    cfg, _, summary, _ = stages
    out = synthetic_root / "models" / "combined"
    scores = pd.read_parquet(out / "scores.parquet")
    for column in (
        "patient_id",
        "split",
        "cs",
        "rad_sign",
        "dl_sign",
        "age",
        "osteoporosis",
        "clinical_model",
        "combined",
        "risk_class",
    ):
        assert column in scores.columns
    assert "osteoporosis" in summary["clinical_significant"]
    model: CombinedModel = joblib.load(out / "model.joblib")
    threshold = json.loads((out / "threshold.json").read_text())["threshold"]
    assert model.threshold == pytest.approx(threshold)
    val = scores[scores["split"] == "val"]
    fpr_tpr = [
        (np.mean(val.loc[val.cs == 0, "combined"] >= t), np.mean(val.loc[val.cs == 1, "combined"] >= t)) for t in val["combined"]
    ]
    assert max(tp - fp for fp, tp in fpr_tpr) == pytest.approx(
        np.mean(val.loc[val.cs == 1, "combined"] >= threshold) - np.mean(val.loc[val.cs == 0, "combined"] >= threshold)
    )
    # From raw tables to probability, signatures and risk class: the stage's own scores again.
    features = synthetic_root / "features"
    radiomics = pd.read_parquet(features / "radiomics.parquet")
    deep = pd.read_parquet(features / "deep.parquet")
    manifest = pd.read_csv(synthetic_root / "cohort" / "manifest.csv")
    test_ids = scores.loc[scores["split"] == "test", "patient_id"]
    pick = lambda frame: frame[frame["patient_id"].isin(test_ids)].iloc[::-1]  # noqa: E731 - order must not matter
    served = model.predict_from_features(pick(radiomics), pick(deep), pick(manifest))
    assert list(served.columns) == ["prob", "rad_sign", "dl_sign", "risk_class"]
    expected = scores.set_index("patient_id").loc[served.index]
    np.testing.assert_allclose(served["prob"], expected["combined"], atol=1e-12)
    np.testing.assert_allclose(served["rad_sign"], expected["rad_sign"], atol=1e-12)
    assert (served["risk_class"] == expected["risk_class"]).all()
    with pytest.raises(ValueError, match="radiomics: 1 required column"):
        model.predict_from_features(pick(radiomics).drop(columns=["t2_disc_original_firstorder_F1"]), pick(deep), pick(manifest))
    with pytest.raises(ValueError, match="hold different patients"):
        model.predict_from_features(pick(radiomics), pick(deep).iloc[1:], pick(manifest))
    bad = pick(manifest).copy()
    bad.loc[bad.index[0], "osteoporosis"] = np.nan
    with pytest.raises(ValueError, match=str(bad.iloc[0]["patient_id"])):
        model.predict_from_features(pick(radiomics), pick(deep), bad)


def test_evaluation_report_and_metrics(stages, synthetic_root):
    _, _, _, metrics = stages
    reports = synthetic_root / "reports"
    html = (reports / "report.html").read_text()
    for heading in ("Table 1.", "Table 2.", "Figure 1.", "Figure 2.", "Figure 3.", "DeLong", "Feature importance", "readers"):
        assert heading in html, heading
    for image in (
        "fig1_lasso_rad",
        "fig1_lasso_dl",
        "fig2_roc",
        "fig3_calibration_dca_val",
        "fig3_calibration_dca_test",
        "fig4_importance",
        "fig5_readers",
    ):
        assert f"evaluation/{image}.png" in html
        assert (reports / "evaluation" / f"{image}.png").stat().st_size > 10_000
    saved = json.loads((reports / "metrics.json").read_text())
    assert set(saved["performance"]) == {"clinical_model", "rad_sign", "dl_sign", "combined"}
    test_row = saved["performance"]["combined"]["test"]
    assert test_row["auc_ci_low"] <= test_row["auc"] <= test_row["auc_ci_high"]
    assert test_row["threshold"] == pytest.approx(saved["threshold"])
    assert {r["split"] for r in saved["delong"]} == {"train", "val", "test", "val+test"}
    assert saved["reader_kappa"] and -1 <= saved["reader_kappa"][0]["kappa"] <= 1
    assert saved["acceptance"]["oracle_auc"] > 0.5 and saved["acceptance"]["n"] > 0
    verdict = "at least" if saved["acceptance"]["ratio_ok"] else "below"
    assert re.search(rf"{verdict}\s+0\.85</span>", html), "the report names evaluation.acceptance_ratio"
    assert metrics["threshold"] == saved["threshold"]
    # Calibration intercept and slope with CIs per model and split; HL on g df (all scores held out or OOF).
    assert set(saved["calibration_fit"]) == {"clinical_model", "rad_sign", "dl_sign", "combined"}
    for split, fit in saved["calibration_fit"]["combined"].items():
        assert split in {"train", "val", "test", "val+test"}
        assert fit["slope"] is None or fit["slope_low"] <= fit["slope"] <= fit["slope_high"], (split, fit)
        assert fit["intercept_low"] <= fit["intercept"] <= fit["intercept_high"]
    for record in saved["calibration"]:
        if record.get("hl_df") is not None:
            assert record["hl_df"] == record["hl_groups"]
    assert "Slope (95% CI)" in html and "Intercept (95% CI)" in html


def test_missing_inputs_are_named(synthetic_root, tmp_path):
    cfg = compose_config([*tiny_overrides(synthetic_root), f"paths.features={tmp_path}/nowhere"])
    with pytest.raises(ValueError, match="radiomics.parquet"):
        run_signatures_stage(cfg)


def _names(value, prefix=""):
    """Every key path of a JSON-like value, e.g. 'signatures.rad.auc_val'."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{prefix}{key}"
            yield from _names(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            yield from _names(item, prefix)


def test_only_evaluate_computes_test_split_metrics(stages, synthetic_root):
    """signatures and combined score the test patients (evaluate needs the scores) but must not
    compute or log any metric of them: no 'test' in their summaries, JSON files or MLflow metrics."""
    import re

    cfg, signatures, combined, _ = stages
    mentions_test = re.compile(r"(^|[._])test($|[._])")
    models = synthetic_root / "models"
    for name, value in (
        ("signatures summary", signatures),
        ("combined summary", combined),
        ("signatures/summary.json", json.loads((models / "signatures" / "summary.json").read_text())),
        ("combined/summary.json", json.loads((models / "combined" / "summary.json").read_text())),
    ):
        found = [n for n in _names(value) if mentions_test.search(n)]
        assert not found, f"{name} holds test-split values: {found}"
    assert "auc_val" in signatures["signatures"]["rad"] and set(combined["auc"]) == {"train", "val"}
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="pandas")
    by_stage = runs.set_index("run_id")["tags.cagerisk.stage"]
    parents = runs["tags.mlflow.parentRunId"] if "tags.mlflow.parentRunId" in runs else pd.Series(index=runs.index, dtype=object)
    stage_of = [
        by_stage.get(parent) if isinstance(parent, str) and parent in by_stage.index else stage
        for stage, parent in zip(runs["tags.cagerisk.stage"], parents, strict=False)
    ]
    metric_columns = [c for c in runs.columns if c.startswith("metrics.")]
    for stage in ("signatures", "combined"):
        rows = runs[[s == stage for s in stage_of]]
        assert len(rows) >= 1
        logged = [c for c in metric_columns if rows[c].notna().any()]
        assert logged, stage
        assert not [c for c in logged if mentions_test.search(c.removeprefix("metrics."))], f"{stage} logged test-split metrics"
    evaluate = runs[runs["tags.cagerisk.stage"] == "evaluate"]
    assert evaluate["metrics.combined_test_auc"].notna().all()  # the check above can see such names


def test_the_default_models_through_signatures_and_combined(tmp_path):
    """sweep=default: Rad-sign is the stacked LR + extra trees on every feature, DL-sign, clinical and
    combined models a CV-tuned L2 LR; one trial each, and no model gives degenerate probabilities."""
    from synthetic_cohort import make_synthetic_cohort

    from cagerisk.models.search import degenerate_share

    root = make_synthetic_cohort(tmp_path / "cohort")
    overrides = [o for o in tiny_overrides(root) if not o.startswith(("sweep=", "classifier.include", "sweep.n_trials"))]
    cfg = compose_config([*overrides, "classifier.candidates.stack.estimator.n_estimators=60", "tracking.enabled=false"])
    summary = run_signatures_stage(cfg)
    for target, classifier, steps in (("rad", "stack", ["impute"]), ("dl", "lr_cv", ["impute", "reduce"])):
        entry = summary["signatures"][target]
        assert (entry["best_classifier"], entry["n_trials_total"]) == (classifier, 1)
        assert [s["step"] for s in entry["selection"]] == steps
    scores = pd.read_parquet(root / "models" / "signatures" / "scores.parquet")
    for column in ("rad_sign", "dl_sign"):
        assert degenerate_share(scores[column]) == 0.0, column
    held = scores["split"] != "train"
    assert roc_auc_score(scores.loc[held, "cs"], scores.loc[held, "rad_sign"]) > 0.7
    combined = run_combined_stage(cfg)
    assert combined["combined"]["best_classifier"] == combined["clinical"]["best_classifier"] == "lr_cv"
    model = joblib.load(root / "models" / "combined" / "model.joblib")
    assert isinstance(model, CombinedModel)

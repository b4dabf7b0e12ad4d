"""The served model's fast paths score exactly as its row-by-row path, and refuse what it refuses.

``CageRiskModel.score`` (MLflow's pyfunc path) turns a table whose rows all carry numeric features
into arrays (``score_arrays``, also the service's path) instead of 11,000-key row dicts; anything
else goes through ``score_rows``. Both must give the same probabilities and the same errors.
"""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from serving_helpers import compose_serving_config

from cagerisk.serving.errors import ScoringInputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(feature_pipeline):
    from cagerisk.stages.register import run_register_stage

    cfg = compose_serving_config(feature_pipeline)
    result = run_register_stage(cfg)
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model()
    data = feature_pipeline / "data"
    manifest = pd.read_csv(data / "cohort" / "manifest.csv").set_index("patient_id", drop=False)
    rad = pd.read_parquet(data / "features" / "radiomics.parquet").set_index("patient_id")
    deep = pd.read_parquet(data / "features" / "deep.parquet").set_index("patient_id")
    patients = list(rad.index[:12])
    frame = pd.concat(
        [manifest.loc[patients, ["patient_id", *model.spec.clinical_variables, "bmi"]], rad.loc[patients], deep.loc[patients]],
        axis=1,
    ).reset_index(drop=True)
    return model, frame


def _error(call) -> tuple[str, str, int]:
    with pytest.raises(ScoringInputError) as err:
        call()
    return err.value.field, err.value.problem, int(err.value.status)


def test_fast_table_path_equals_row_path(served):
    model, frame = served
    assert model._feature_arrays(frame) is not None  # the fast path is taken
    fast = model.score(frame)
    rows = model.score_rows(frame.to_dict("records"))
    pd.testing.assert_frame_equal(fast, rows)
    assert list(fast["mode"].unique()) == ["features"]
    # Some features missing (NaN, imputed) in a row: still the same.
    holes = frame.copy()
    holes.loc[0, model.spec.radiomics_features[:3]] = np.nan
    holes.loc[1, model.spec.deep_features[:2]] = np.nan
    pd.testing.assert_frame_equal(model.score(holes), model.score_rows(holes.to_dict("records")))


def test_arrays_equal_rows_and_refuse_the_same(served):
    model, frame = served
    spec = model.spec
    clinical = [{k: row[k] for k in spec.clinical_variables} for row in frame.to_dict("records")]
    arrays = model.score_arrays(frame[spec.radiomics_features].to_numpy(), frame[spec.deep_features].to_numpy(), clinical)
    rows = model.score_rows(frame[[*spec.clinical_variables, *spec.radiomics_features, *spec.deep_features]].to_dict("records"))
    np.testing.assert_array_equal(arrays["probability"], rows["probability"])
    # The service's form: the same output as columns, without the DataFrame.
    columns = model.score_arrays(
        frame[spec.radiomics_features].to_numpy(), frame[spec.deep_features].to_numpy(), clinical, as_columns=True
    )
    pd.testing.assert_frame_equal(pd.DataFrame({**columns, "patient_id": pd.Series(columns["patient_id"], dtype=object)}), arrays)

    one = frame.iloc[[0]].reset_index(drop=True)
    for name, value in [(spec.radiomics_features[0], math.inf), (spec.deep_features[-1], -2e15)]:
        bad = one.copy()
        bad[name] = value
        expected = _error(lambda b=bad: model.score_rows(b.to_dict("records")))
        assert _error(lambda b=bad: model.score(b)) == expected
        assert expected[0] == "features" and name in expected[1]
    # Every feature of one signature missing: refused (400) by both paths.
    empty = one.copy()
    empty[spec.deep_features] = np.nan
    expected = _error(lambda: model.score_rows(empty.to_dict("records")))
    assert _error(lambda: model.score(empty)) == expected and expected[2] == 400
    # In a batch the row is named.
    two = pd.concat([one, empty], ignore_index=True)
    assert _error(lambda: model.score(two))[0] == "rows[1].features"


def test_other_tables_go_row_by_row(served):
    model, frame = served
    spec = model.spec
    one = frame.iloc[[0]].reset_index(drop=True)
    # A text value where a number belongs, a row without features, a bad optional clinical value: the
    # row path words the error, the table path must not score past it.
    text = one.astype({spec.radiomics_features[0]: object})
    text.loc[0, spec.radiomics_features[0]] = "12.5"
    assert model._feature_arrays(text) is None
    assert _error(lambda: model.score(text))[0] == "features"
    no_features = one.copy()
    no_features[[*spec.radiomics_features, *spec.deep_features]] = np.nan
    assert model._feature_arrays(no_features) is None
    assert _error(lambda: model.score(no_features))[0] == "features"
    bmi = one.copy()
    bmi["bmi"] = 500.0
    assert _error(lambda: model.score(bmi)) == _error(lambda: model.score_rows(bmi.to_dict("records")))


def test_compiled_pipelines_score_as_scikit_learn(served):
    """The served path evaluates the pipelines in numpy (cagerisk.models.compiled) once they were checked
    at load; probabilities, signatures and risk classes are scikit-learn's own."""
    model, frame = served
    assert model.compiled is not None  # the test model's pipelines are of kinds the module knows
    holes = frame.copy()
    holes.loc[0, model.spec.radiomics_features[:3]] = np.nan
    compiled = model.score(holes)
    kept = model.compiled
    try:
        model.compiled = None
        sklearn = model.score(holes)
    finally:
        model.compiled = kept
    for column in ("probability", "rad_sign", "dl_sign"):
        assert np.max(np.abs(compiled[column].to_numpy() - sklearn[column].to_numpy())) <= 1e-12
    assert compiled["risk_class"].tolist() == sklearn["risk_class"].tolist()
    # and against the combined stage's own call, on named tables
    ids = [f"P{i}" for i in range(len(holes))]
    named = holes.assign(patient_id=ids)
    expected = model.combined.predict_from_features(
        named[["patient_id", *model.radiomics_columns]],
        named[["patient_id", *model.deep_columns]],
        named[["patient_id", *model.spec.clinical_variables]],
    )["prob"].to_numpy()
    assert np.max(np.abs(compiled["probability"].to_numpy() - expected)) <= 1e-9

"""ViT-3D deep radiomics: LightningModule and DataModule, pretrained-weight loading, embedding export."""

from cagerisk.deep.data import DeepDataModule, PreprocessError, PreprocessSettings, preprocess_cohort, preprocess_volume
from cagerisk.deep.export import (
    DeepBundle,
    DeepEmbedder,
    embed_samples,
    embedding_table,
    feature_columns,
    load_deep_bundle,
    save_deep_bundle,
)
from cagerisk.deep.lightning_mlflow import ActiveRunMLFlowLogger, active_run_logger, log_torch_model
from cagerisk.deep.lightning_module import CSClassifier, patient_auc
from cagerisk.deep.model import DeepRadiomicsNet, build_deep_net, input_key
from cagerisk.deep.pretrained import DEFAULT_KEY_MAP, PretrainedLoadError, PretrainedReport, load_pretrained
from cagerisk.deep.stage import deep_inputs, run_deep_stage

__all__ = [
    "DEFAULT_KEY_MAP",
    "ActiveRunMLFlowLogger",
    "CSClassifier",
    "DeepBundle",
    "DeepDataModule",
    "DeepEmbedder",
    "DeepRadiomicsNet",
    "PreprocessError",
    "PreprocessSettings",
    "PretrainedLoadError",
    "PretrainedReport",
    "active_run_logger",
    "build_deep_net",
    "deep_inputs",
    "embed_samples",
    "embedding_table",
    "feature_columns",
    "input_key",
    "load_deep_bundle",
    "load_pretrained",
    "log_torch_model",
    "patient_auc",
    "preprocess_cohort",
    "preprocess_volume",
    "run_deep_stage",
    "save_deep_bundle",
]

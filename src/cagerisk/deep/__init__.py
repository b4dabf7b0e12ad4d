"""ViT-3D deep radiomics: LightningModule and DataModule, pretrained-weight loading, embedding export.

Names are imported on first use (PEP 562): importing one light module of this package (what a
served model unpickles) does not import the others (training, Lightning, MLflow).
"""

from __future__ import annotations

from cagerisk.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DeepDataModule": "cagerisk.deep.data",
    "PreprocessError": "cagerisk.deep.data",
    "PreprocessSettings": "cagerisk.deep.data",
    "preprocess_cohort": "cagerisk.deep.data",
    "preprocess_volume": "cagerisk.deep.data",
    "DeepBundle": "cagerisk.deep.export",
    "DeepEmbedder": "cagerisk.deep.export",
    "embed_samples": "cagerisk.deep.export",
    "embedding_table": "cagerisk.deep.export",
    "feature_columns": "cagerisk.deep.export",
    "load_deep_bundle": "cagerisk.deep.export",
    "save_deep_bundle": "cagerisk.deep.export",
    "ActiveRunMLFlowLogger": "cagerisk.deep.lightning_mlflow",
    "active_run_logger": "cagerisk.deep.lightning_mlflow",
    "log_torch_model": "cagerisk.deep.lightning_mlflow",
    "CSClassifier": "cagerisk.deep.lightning_module",
    "patient_auc": "cagerisk.deep.lightning_module",
    "DeepRadiomicsNet": "cagerisk.deep.model",
    "build_deep_net": "cagerisk.deep.model",
    "input_key": "cagerisk.deep.model",
    "DEFAULT_KEY_MAP": "cagerisk.deep.pretrained",
    "PretrainedLoadError": "cagerisk.deep.pretrained",
    "PretrainedReport": "cagerisk.deep.pretrained",
    "load_pretrained": "cagerisk.deep.pretrained",
    "FoldPlan": "cagerisk.deep.finetune",
    "build_network": "cagerisk.deep.finetune",
    "crossfit_plan": "cagerisk.deep.finetune",
    "deep_inputs": "cagerisk.deep.finetune",
    "embed_cohort": "cagerisk.deep.finetune",
    "fine_tune": "cagerisk.deep.finetune",
    "fold_samples": "cagerisk.deep.finetune",
    "preprocess_inputs": "cagerisk.deep.finetune",
    "FOLD_COLUMN": "cagerisk.deep.table",
    "SEEN_COLUMN": "cagerisk.deep.table",
    "fold_column": "cagerisk.deep.table",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

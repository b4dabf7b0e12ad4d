"""Typed (Hydra structured) configs: one dataclass per config group that code reads.

The YAML files under ``conf/`` keep the values; these dataclasses give them types, so code reads
``cfg.radiomics.bin_width`` as a float without casting, and a wrong type fails at composition with
the key's name. Stages turn their group into its dataclass with ``OmegaConf.to_object``.
"""

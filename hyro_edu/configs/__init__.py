"""YAML training configs for :mod:`hyro_edu.seg_training` (``python -m hyro_edu.seg_training --config NAME``)."""

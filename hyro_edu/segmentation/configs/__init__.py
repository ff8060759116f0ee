"""YAML training configs for :mod:`hyro_edu.segmentation.train` (``python -m hyro_edu.segmentation.train --config NAME``)."""

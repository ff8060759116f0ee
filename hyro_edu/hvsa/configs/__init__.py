"""YAML training configs for :mod:`hyro_edu.hvsa.train` (``python -m hyro_edu.hvsa.train --config NAME``)."""

"""HVSA, hyperbolic visual-semantic alignment (:cite:`hvsa`): planned (issue 15).

Its design is to build on :mod:`hyro_edu.geometry.wrapped_normal` (the mixture prior),
:mod:`hyro_edu.hierarchy` (entailment cones, hierarchical metrics) and :mod:`hyro_edu.training`.
"""

"""Tree alignment on an intermediate Lorentz manifold (:cite:`wu2026modality`): planned (issue 16).

Its design is to build on :mod:`hyro_edu.geometry.intermediate_curvature`, :mod:`hyro_edu.clip`
(prompts on both towers) and :mod:`hyro_edu.training`.
"""

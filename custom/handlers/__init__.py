"""Ignite handlers the bundle's configs attach to its engines, one concept per module.

``checkpoints`` (full training checkpoints and the best generator, written atomically; which
checkpoint a run resumes from), ``preview`` (TensorBoard pictures of a validation case) and ``report``
(the evaluation's per-case CSV and summary JSON).
"""

"""Training: the trainers (MONAI engines), their objectives, the learning-rate schedule, resumable
random state, checkpoints and TensorBoard previews."""

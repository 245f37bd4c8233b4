"""Evaluation: the prequential replay, its datasets and baselines, synthetic data, the demo."""

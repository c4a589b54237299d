"""Synthetic frames and patches with ground truth."""

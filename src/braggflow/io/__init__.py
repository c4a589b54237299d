"""Readers of detector frames and writers of results."""

"""Checkpoints on disk: name tables, TensorFlow's TensorBundle, and the Google / Hugging Face / minibert formats."""

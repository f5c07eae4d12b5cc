"""The network: config, encoder, attention kernels and their dispatch, classification and pre-training heads.

Knows nothing of files, tokenizers, labels, losses or devices: heads return logits.
"""

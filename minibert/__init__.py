"""minibert: a from-scratch PyTorch BERT for text classification, exact to Google's checkpoints."""

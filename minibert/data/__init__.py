"""Examples on disk -> batches: readers of the project's format and of public data sets, splits, batching."""

"""Text -> token ids -> framed model inputs: Google's tokenizer, [CLS]/[SEP] framing, long texts."""

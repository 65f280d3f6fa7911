"""Wire formats: OpenAI's chat shapes (with xAI's and Perplexity's search options) and
request field types."""

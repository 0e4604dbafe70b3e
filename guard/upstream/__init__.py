"""Talking to the upstream vLLM server: the pooled HTTP client and the sans-IO SSE decoder."""

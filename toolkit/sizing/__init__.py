"""Pure sizing math: weights, KV cache, vLLM's memory budget, decode speed. No I/O."""

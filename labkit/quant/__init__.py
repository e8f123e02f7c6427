"""Quantization: int8 (absmax, zero-point, SmoothQuant, LLM.int8), and more bits-per-weight labs."""

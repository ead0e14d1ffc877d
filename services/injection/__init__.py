"""Injection service: scores prompts as prompt-injection attacks (NanoGuard, ONNX Runtime)."""

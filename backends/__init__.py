"""Model runtimes (backends) that naiad loads by name: python, onnxruntime, pytorch, ..."""

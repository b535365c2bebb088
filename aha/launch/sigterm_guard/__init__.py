"""sitecustomize for the vLLM server processes `aha launch` starts: see sitecustomize.py."""

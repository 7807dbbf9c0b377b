"""xw-operator: run LLM inference engines on any AI accelerator, on Kubernetes or one Docker host."""

__version__ = "0.1.0"

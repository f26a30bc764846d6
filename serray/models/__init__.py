"""Model families and the model registry."""

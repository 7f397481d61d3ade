"""The PyTorch adapter package (imported only when a torch network or backend is used)."""

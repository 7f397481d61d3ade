"""The TensorFlow adapter package (imported only when a Keras / tf network or backend is used)."""

"""serray: speech emotion recognition at scale on Ray."""
__version__ = "0.1.0"

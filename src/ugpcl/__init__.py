"""Reference reproduction of UGPCL and its semi-supervised baselines."""

__version__ = "0.1.0"

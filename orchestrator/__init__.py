"""ablate: ablation grids of deep-learning experiments as Ray Tune trials, with Parquet results."""

__version__ = "0.1.0"

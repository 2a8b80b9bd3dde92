"""Data stage: the ABID layout, S3 download, indexing and validation, splits, synthetic bins, datasets."""

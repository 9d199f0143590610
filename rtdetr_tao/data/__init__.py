"""Data: sources (local, archives, S3), COCO datasets, category maps, transforms, loaders, synthetic data."""

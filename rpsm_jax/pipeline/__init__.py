"""From TFDS records to batches: datasets, split index, clips, augmentation, loader."""

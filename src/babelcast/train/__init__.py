"""Training and fine-tuning in plain PyTorch: losses, data, augmentation, the loop, `.nemo` export.

data (manifests → buckets → batches) → loop (loss, optimizer, checkpoints, validation) → export (.nemo)
"""

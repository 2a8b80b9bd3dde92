"""Model stage: backbones, counting heads and losses, metrics and calibration, the model artifact.

Nothing here imports the training code: a model artifact loads for inference on its own.
"""

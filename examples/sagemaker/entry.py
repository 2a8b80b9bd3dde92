"""SageMaker entry point: runs ``binventory train`` with the job's hyperparameters as options.

SageMaker passes hyperparameters as ``--name value``; binventory reads the data channel
(SM_CHANNEL_TRAINING) and writes the model to SM_MODEL_DIR by itself, and with
``distribution={"torch_distributed": {"enabled": True}}`` SageMaker starts it under torchrun.
binventory itself comes from the wheel that launch.py stages beside this file, installed with its
``train`` extra only: ``binventory.cli`` builds its parser without the serving or database
libraries.
"""
import sys

from binventory.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

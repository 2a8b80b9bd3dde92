"""Launch ``binventory train`` as a SageMaker training job (needs ``pip install sagemaker``).

    python examples/sagemaker/launch.py --data s3://my-bucket/abid/ --role arn:aws:iam::...:role/X

The data prefix must hold a dataset in the ABID layout with its manifest inside it
(``binventory data index DIR --out DIR/manifest.parquet`` + ``binventory data split``), uploaded
as it is: the manifest's paths are relative to its folder.
"""
import argparse
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def stage_source(dest: Path) -> Path:
    """A source_dir with the binventory package, the entry point and its requirements."""
    shutil.copytree(REPO / "binventory", dest / "binventory",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__).with_name("entry.py"), dest / "entry.py")
    # The PyTorch container has torch and torchvision; these are the rest of our needs.
    (dest / "requirements.txt").write_text("\n".join([
        "pandas>=2.1", "pyarrow>=14", "pillow>=10", "tqdm>=4.66", "rich>=13", "matplotlib>=3.8",
        "tensorboard>=2.15", "boto3>=1.34", "efficientnet-lite-pytorch==0.1.0"]) + "\n")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="s3:// prefix of the dataset")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--instance-type", default="ml.g5.xlarge")
    parser.add_argument("--instance-count", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--weights", default="DEFAULT",
                        help="the job has internet: torchvision's weights download there")
    args = parser.parse_args()

    from sagemaker.pytorch import PyTorch

    with tempfile.TemporaryDirectory() as tmp:
        estimator = PyTorch(
            entry_point="entry.py", source_dir=str(stage_source(Path(tmp))), role=args.role,
            framework_version="2.3", py_version="py311", instance_type=args.instance_type,
            instance_count=args.instance_count,
            distribution={"torch_distributed": {"enabled": True}},
            hyperparameters={"epochs": args.epochs, "weights": args.weights, "workers": 4,
                             "cache-dir": "/tmp/binventory-cache"})
        estimator.fit({"training": args.data})
    print("model artifact:", estimator.model_data)


if __name__ == "__main__":
    main()

"""Launch ``binventory train`` as a SageMaker training job (needs ``pip install sagemaker``).

    python examples/sagemaker/launch.py --data s3://my-bucket/abid/ --role arn:aws:iam::...:role/X

The data prefix must hold a dataset in the ABID layout with its manifest inside it
(``binventory data index DIR --out DIR/manifest.parquet`` + ``binventory data split``), uploaded
as it is: the manifest's paths are relative to its folder.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_wheel(dest: Path) -> Path:
    """binventory's wheel, built from a clean copy of the sources (never a stale build/ folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(REPO / "binventory", src / "binventory",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "--wheel-dir", str(dest), str(src)], check=True)
    return next(dest.glob("binventory-*.whl"))


def stage_source(dest: Path) -> Path:
    """A source_dir with binventory's wheel, the entry point and a requirements.txt that installs
    the wheel with the ``train`` extra (no web server, ONNX Runtime or database libraries)."""
    dest.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(dest)
    shutil.copy(Path(__file__).with_name("entry.py"), dest / "entry.py")
    # SageMaker runs 'pip install -r requirements.txt' in the unpacked source_dir.
    (dest / "requirements.txt").write_text(f"./{wheel.name}[train]\n")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="s3:// prefix of the dataset")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--instance-type", default="ml.g5.xlarge")
    parser.add_argument("--instance-count", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--framework-version", default="2.3",
                        help="the container's PyTorch; binventory pins torch==2.14.1, which pip "
                             "installs over a different one when the job starts")
    parser.add_argument("--weights", default="DEFAULT",
                        help="the job has internet: torchvision's weights download there")
    args = parser.parse_args()

    from sagemaker.pytorch import PyTorch

    with tempfile.TemporaryDirectory() as tmp:
        estimator = PyTorch(
            entry_point="entry.py", source_dir=str(stage_source(Path(tmp))), role=args.role,
            framework_version=args.framework_version, py_version="py311", instance_type=args.instance_type,
            instance_count=args.instance_count,
            distribution={"torch_distributed": {"enabled": True}},
            hyperparameters={"epochs": args.epochs, "weights": args.weights, "workers": 4,
                             "cache-dir": "/tmp/binventory-cache"})
        estimator.fit({"training": args.data})
    print("model artifact:", estimator.model_data)


if __name__ == "__main__":
    main()

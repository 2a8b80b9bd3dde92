"""``export_onnx``: a model artifact to an ONNX file that ONNX Runtime serves without torch.

The exported graph is ``InferenceModule``: uint8 NHWC pixels in ("images"), calibrated
probabilities out ("probabilities"), with a dynamic batch axis. Normalization and temperature are
inside the graph, so a client only decodes and resizes. The file carries its own metadata (model
version, class names, preprocessing, temperature, the artifact's SHA-256), so it can be checked
against the artifact it came from and used on its own.

Every export is checked against torch on real-looking images (synthetic bins) and refused when
the probabilities differ by more than ``PARITY_TOL``.
"""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from binventory import BinventoryError, __version__
from binventory.data.preprocess import Preprocess
from binventory.files import atomic_write, sha256_file
from binventory.model.artifact import CountingModel, load_artifact
from binventory.serving.predictor import InferenceModule

log = logging.getLogger(__name__)

PARITY_TOL = 1e-4
CALIBRATION_PIXELS = 64 * 224 * 224  # int8 calibration memory budget, see quantize_int8
INPUT, OUTPUT = "images", "probabilities"


@dataclass
class ExportResult:
    path: Path
    parity: float                      # max |p_onnx - p_torch| over the check images
    int8_path: Path | None = None
    int8_diff: float | None = None     # max |p_int8 - p_fp32| over the check images
    int8_agreement: float | None = None  # share of check images with the same argmax


def onnx_path_for(model_path: str | Path) -> Path:
    """Where the ONNX file of an artifact lives by default: model.pt -> model.onnx."""
    return Path(model_path).with_suffix(".onnx")


def int8_path_for(onnx_path: str | Path) -> Path:
    """model.onnx -> model.int8.onnx."""
    return Path(onnx_path).with_suffix(".int8.onnx")


# ---- check images ------------------------------------------------------------------------------

def sample_images(preprocess: Preprocess, n: int = 8, seed: int = 0) -> np.ndarray:
    """n synthetic bin photos, decoded and resized like real inputs (uint8 N x S x S x 3).

    Parity on random noise says little: real photos have smooth regions and edges that drive
    activations into other ranges, and int8 calibration needs the same.
    """
    from binventory.data.synth import render_bin

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        image, _ = render_bin(rng, int(rng.integers(0, 6)), f"check-{i}")
        images.append(np.asarray(preprocess.resize_image(image.convert("RGB"))))
    return np.stack(images)


# ---- export ------------------------------------------------------------------------------------

def _torch_export(module: InferenceModule, example: torch.Tensor, path: str, opset: int) -> None:
    # The TorchScript exporter (dynamo=False): with dynamic_axes it gives a clean symbolic batch
    # axis for these convolutional nets, and it needs no onnxscript (which the dynamo exporter
    # requires and this environment does not have). It is deprecated, not removed, in torch 2.x.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), path, dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})


def metadata(counting: CountingModel, source_sha256: str) -> dict[str, str]:
    return {"model_version": counting.model_id, "model_name": counting.name,
            "classes": json.dumps(counting.classes.names),
            "count_classes": json.dumps(counting.classes.to_dict()),
            "preprocess": json.dumps(counting.preprocess.to_dict()),
            "temperature": repr(float(counting.temperature)),
            "backbone": counting.spec.backbone, "tta": str(counting.spec.tta).lower(),
            "parent": counting.parent, "data": json.dumps(counting.data),
            "source_sha256": source_sha256,
            "binventory_version": __version__}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (without loading its weights into a session)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _add_metadata(path: str, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(path)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "binventory"
    onnx.save(model, path)


def onnx_session(path: str | Path | None, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimizations on."""
    import onnxruntime as ort

    if path is None or not Path(path).is_file():
        raise BinventoryError(f"ONNX model not found: {path}; run 'binventory export --model "
                              "MODEL.pt' first (it writes MODEL.onnx beside the artifact)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for corrupt files
        raise BinventoryError(f"{path} is not a loadable ONNX model: {e}") from None


def run_session(session, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([session.run(None, {INPUT: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def export_model(model_path: str | Path, out: str | Path | None = None, opset: int = 17,
                 quantize: bool = False, calibration: np.ndarray | None = None,
                 check_images: np.ndarray | None = None) -> ExportResult:
    """Export, check parity, and optionally write an int8 copy; see the module docstring.

    ``calibration``: uint8 images for int8 calibration (default: synthetic bins; real images from
    the training data calibrate better). ``check_images``: images for the parity check.
    """
    model_path = Path(model_path)
    counting = load_artifact(model_path)
    out = Path(out) if out is not None else onnx_path_for(model_path)
    module = InferenceModule(counting.model, counting.preprocess, counting.temperature).eval()
    if check_images is None:
        check_images = sample_images(counting.preprocess)
    props = metadata(counting, sha256_file(model_path))
    result = ExportResult(path=out, parity=float("nan"))

    def write(tmp: str) -> None:
        size = counting.preprocess.image_size
        # Traced with 2 images, not 1, so that no traced shape arithmetic can take the batch axis
        # for a size-1 dimension; dynamic_axes makes it symbolic, and the parity check runs N.
        example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
        try:
            _torch_export(module, example, tmp, opset)
        except Exception as e:
            raise BinventoryError(f"ONNX export of {counting.spec.backbone} failed: {e}") from None
        _add_metadata(tmp, props)
        parity = _parity(module, onnx_session(tmp), check_images)
        if not parity <= PARITY_TOL:  # also catches NaN
            raise BinventoryError(f"exported model differs from torch by {parity:.2e} "
                                  f"(> {PARITY_TOL:.0e}); not written")
        result.parity = parity

    atomic_write(out, write)
    if quantize:
        if calibration is None:
            calibration = sample_images(counting.preprocess, n=64, seed=1)
        result.int8_path = quantize_int8(out, calibration)
        fp32 = run_session(onnx_session(out), check_images)
        int8 = run_session(onnx_session(result.int8_path), check_images)
        result.int8_diff = float(np.abs(int8 - fp32).max())
        result.int8_agreement = float((int8.argmax(1) == fp32.argmax(1)).mean())
    return result


def export_onnx(model_path: str | Path, out: str | Path | None = None, opset: int = 17,
                quantize: bool = False) -> Path:
    """Export an artifact to ONNX (model.onnx beside it by default); returns the path."""
    return export_model(model_path, out, opset, quantize).path


def _parity(module: InferenceModule, session, images: np.ndarray) -> float:
    with torch.inference_mode():
        expected = module(torch.from_numpy(images)).numpy()
    got = run_session(session, images)
    return float(np.abs(got - expected).max())


# ---- int8 --------------------------------------------------------------------------------------

class _Images:
    """onnxruntime's CalibrationDataReader protocol over an array of images, a few at a time."""

    def __init__(self, images: np.ndarray, batch_size: int = 8):
        self.batches = iter([images[i:i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT: batch}


@contextmanager
def _quiet_root_logger():
    # The quantizer logs advice on the root logger ("consider pre-processing", "cannot quantize
    # the uint8 input") that does not apply here; keep it out of the command's output.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(onnx_path: str | Path, calibration: np.ndarray) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on ``calibration``.

    Static rather than dynamic: dynamic quantization turns convolutions into ConvInteger, which
    ONNX Runtime runs ~5x slower than fp32 on CPU; QDQ convolutions fuse into int8 kernels.
    Only Conv/Gemm/MatMul are quantized: the normalization at the input and the softmax at the
    output stay in float, where int8 would cost accuracy and save nothing.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_path = Path(onnx_path)
    # The calibrator holds every activation of every calibration image in memory (its option to
    # fold ranges as it goes drops data in onnxruntime 1.2x-1.3x), about 1.5 GB for 64 images at
    # 224 px: cap the images by pixels.
    calibration = calibration[:max(8, CALIBRATION_PIXELS // calibration.shape[1] ** 2)]
    props = read_metadata(onnx_path) | {"quantization": "int8 static QDQ, per-channel weights"}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = str(Path(tmp) / "prepared.onnx")

        def write(tmp_out: str) -> None:
            with _quiet_root_logger():
                # Folds BatchNorm and constants first, so calibration sees the graph that runs.
                quant_pre_process(str(onnx_path), prepared, skip_symbolic_shape=True)
                quantize_static(prepared, tmp_out, _Images(calibration),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                                calibrate_method=CalibrationMethod.MinMax)
            _add_metadata(tmp_out, props)

        return atomic_write(int8_path_for(onnx_path), write)


def ensure_onnx(model_path: str | Path, onnx_path: str | Path | None = None) -> tuple[Path, bool]:
    """The ONNX file of an artifact, exported first when missing or exported from another
    artifact file (compared by SHA-256); returns (path, whether it was exported now)."""
    model_path = Path(model_path)
    path = Path(onnx_path) if onnx_path is not None else onnx_path_for(model_path)
    if path.is_file() and read_metadata(path).get("source_sha256") == sha256_file(model_path):
        return path, False
    if onnx_path is not None:  # the user named this file: never overwrite it behind their back
        if not path.is_file():
            onnx_session(path)  # raises the "run binventory export first" error
        raise BinventoryError(f"{path} was not exported from {model_path}: "
                              f"run 'binventory export --model {model_path} --out {path}'")
    log.info("exporting %s to %s (missing, or exported from another artifact)", model_path, path)
    return export_onnx(model_path), True

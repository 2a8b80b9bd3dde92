"""torch.distributed set-up for torchrun and SageMaker training jobs.

Under ``torchrun`` the usual RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR variables are set. A
SageMaker job without torchrun describes its cluster in SM_HOSTS / SM_CURRENT_HOST instead; we then
run one process per host and derive the same variables from those.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from binventory.world import world_from_env

SAGEMAKER_PORT = "29500"


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def sagemaker_env(environ: dict | None = None) -> dict[str, str]:
    """torch.distributed variables derived from a SageMaker job's SM_HOSTS / SM_CURRENT_HOST."""
    environ = os.environ if environ is None else environ
    if "SM_HOSTS" not in environ or "WORLD_SIZE" in environ:
        return {}
    hosts = sorted(json.loads(environ["SM_HOSTS"]))
    current = environ.get("SM_CURRENT_HOST", hosts[0])
    return {"RANK": str(hosts.index(current)), "WORLD_SIZE": str(len(hosts)), "LOCAL_RANK": "0",
            "MASTER_ADDR": hosts[0], "MASTER_PORT": environ.get("MASTER_PORT", SAGEMAKER_PORT)}


def sagemaker_paths(environ: dict | None = None) -> dict[str, str]:
    """Where a SageMaker job keeps its data and wants its outputs (empty outside SageMaker)."""
    environ = os.environ if environ is None else environ
    out = {}
    if "SM_MODEL_DIR" in environ:
        out["model_dir"] = environ["SM_MODEL_DIR"]
    channels = {k[len("SM_CHANNEL_"):].lower(): v for k, v in environ.items()
                if k.startswith("SM_CHANNEL_")}
    for name in ("training", "train", "data"):
        if name in channels:
            out["data_dir"] = channels[name]
            break
    else:
        if channels:
            out["data_dir"] = sorted(channels.items())[0][1]
    if "SM_OUTPUT_DATA_DIR" in environ:
        out["output_data_dir"] = environ["SM_OUTPUT_DATA_DIR"]
    return out


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def setup(device: str = "auto") -> DistInfo:
    """Initialize the process group when launched with more than one process."""
    os.environ.update(sagemaker_env())
    world = world_from_env()
    if not world.enabled:
        return DistInfo(device=pick_device(device))
    chosen = pick_device(device, world.local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistInfo(world.rank, world.size, world.local_rank, chosen)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` (any picklable value) on every rank, for decisions every rank must take
    alike, such as where to resume from: on several hosts each rank sees its own disk."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate a tensor from every rank (shapes may differ in the first dimension)."""
    if not info.enabled:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def weight_checksums(model: torch.nn.Module, info: DistInfo) -> list[float]:
    """Each rank's sum of its weights: DDP keeps replicas identical, and this shows it."""
    with torch.no_grad():
        total = sum(p.double().sum() for p in model.parameters()).reshape(1, 1).to(info.device)
    return all_gather_cat(total, info).flatten().tolist()

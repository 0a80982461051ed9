"""What a result was measured with: package versions and hardware, for the results file."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any, Dict

PACKAGES = ("finetuner-selfsup", "finetuner", "docarray", "torch", "torchvision", "numpy", "pillow")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment(device: str) -> Dict[str, Any]:
    import torch

    hardware: Dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if torch.cuda.is_available():
        hardware["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "hardware": hardware,
    }

"""Shared parts of the benchmarks: generated TLL-size JPEGs, the model, epoch timing, and a
driver that runs every configuration in its own fresh process, one after the other, and
prints each one's throughput as a ratio to the anchor measured in the same run.

A configuration is a function ``run(args) -> dict`` in the benchmark script; the driver
calls the script again with ``--config NAME`` (and ``FINETUNER_SELFSUP_DISABLE=1`` for the
upstream Finetuner 0.4.1 anchor, so that its own ``fit`` runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

#: TLL images are about 200 x 245 (width x height)
TLL_SIZE = (200, 245)
#: where the benchmarks keep their generated JPEGs (reused between runs)
DEFAULT_DATA = Path(tempfile.gettempdir()) / "fss-bench-tll-size"


def make_jpegs(folder: Path, count: int, size=TLL_SIZE, seed: int = 0) -> List[str]:
    """``count`` smooth random RGB JPEGs (quality 90) of ``size`` (width, height); reused if present.

    Image ``i`` is drawn from its own seed ``(seed, i)``, so it is the same whichever
    benchmark made the folder first (one shared stream restarted per call made the images
    a larger run added copies of those a smaller run had written).
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            rng = np.random.default_rng((seed, i))
            coarse = rng.random((size[1] // 16 + 1, size[0] // 16 + 1, 3))
            image = Image.fromarray((coarse * 255).astype(np.uint8)).resize(size, Image.BICUBIC)
            noise = rng.integers(-20, 21, (size[1], size[0], 3))
            pixels = np.clip(np.asarray(image).astype(int) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def jpeg_documents(folder: Path, count: int):
    """A DocumentArray of ``count`` generated TLL-size JPEGs (``uri`` documents)."""
    from docarray import Document, DocumentArray

    return DocumentArray(Document(uri=p) for p in make_jpegs(folder, count))


def resnet18_with_head():
    """ResNet-18 from scratch (512-d) and SimCLR v1's 2-layer head (512 -> 512 -> 128)."""
    import torch
    import torchvision
    from torch import nn

    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(weights=None)
    backbone.fc = nn.Identity()
    head = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128))
    return nn.Sequential(backbone, head)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class EpochClock:
    """Wall time of each training epoch (a Finetuner-style callback; works with both engines)."""

    def __init__(self) -> None:
        self.times: List[float] = []
        self._start = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        self.times.append(time.perf_counter() - self._start)

    def as_callback(self):
        from finetuner.tuner.callback.base import BaseCallback

        clock = self

        class Clock(BaseCallback):
            def on_train_epoch_begin(self, tuner):
                clock.start()

            def on_train_epoch_end(self, tuner):
                clock.stop()

        return Clock()


def throughput(views_per_epoch: int, epoch_times: List[float], skip: int = 1) -> Dict[str, float]:
    """Views per second: median over the epochs after the first ``skip`` (warm-up, decoding)."""
    measured = epoch_times[skip:]
    return {
        "views_per_s": views_per_epoch / statistics.median(measured),
        "epoch_s": [round(t, 3) for t in epoch_times],
    }


def environment() -> Dict[str, str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(
    description: str,
    configs: Dict[str, Callable[[argparse.Namespace], dict]],
    anchor: str,
    upstream: tuple = (),
) -> None:
    """Run every configuration in a fresh process (or one, with ``--config``) and report."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", choices=sorted(configs), help="run only this configuration, in this process")
    parser.add_argument("--only", nargs="+", choices=sorted(configs), help="configurations to run (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the generated JPEGs")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over all configurations, interleaved; the median of the rounds is reported")
    args, _ = parser.parse_known_args()

    if args.config:
        import torch

        torch.set_num_threads(args.threads)
        result = configs[args.config](args)
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        print("RESULT " + json.dumps(result), flush=True)
        return

    names = args.only or list(configs)
    if anchor not in names:
        names = [anchor] + names
    rounds: Dict[str, List[dict]] = {name: [] for name in names}
    for round_index in range(args.repeat):
        for name in names:
            env = dict(os.environ)
            if name in upstream:
                env["FINETUNER_SELFSUP_DISABLE"] = "1"  # Finetuner 0.4.1's own fit
            command = [sys.executable, sys.argv[0], *sys.argv[1:], "--config", name]
            print(f"--- round {round_index + 1}: {name}", flush=True)
            process = subprocess.run(command, env=env, capture_output=True, text=True)
            lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
            if process.returncode != 0 or not lines:
                print(process.stdout[-2000:], process.stderr[-4000:], sep="\n")
                continue
            rounds[name].append(json.loads(lines[-1][len("RESULT "):]))
            print(json.dumps(rounds[name][-1]), flush=True)
    results: Dict[str, dict] = {}
    for name, measured in rounds.items():
        if not measured:
            results[name] = {"error": "no successful run"}
            continue
        rates = [m["views_per_s"] for m in measured]
        results[name] = {
            "views_per_s": statistics.median(rates),
            "rounds_views_per_s": [round(r, 1) for r in rates],
            "peak_rss_mb": max(m["peak_rss_mb"] for m in measured),
        }

    base = results.get(anchor, {}).get("views_per_s")
    print(f"\n{description}\n")
    print(f"| configuration | views/s (median) | ratio to {anchor} | views/s per round | peak RSS MB |")
    print("|---|---:|---:|---|---:|")
    for name, result in results.items():
        if "views_per_s" not in result:
            print(f"| {name} | failed | | | |")
            continue
        ratio = result["views_per_s"] / base if base else float("nan")
        per_round = ", ".join(f"{r:.0f}" for r in result["rounds_views_per_s"])
        print(f"| {name} | {result['views_per_s']:.0f} | {ratio:.2f} | {per_round} | {result['peak_rss_mb']:.0f} |")
    print("\n" + json.dumps(environment()))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "environment": environment()}, indent=1))


def lightly_recipe(paths: List[str], input_size: int, images_per_batch: int, epochs: int, model,
                   temperature: float = 0.5) -> List[float]:
    """lightly's SimCLR recipe: ``SimCLRTransform`` on a JPEG decoded per access, a torch
    DataLoader in the main process, lightly's ``NTXentLoss``, Adam; epoch wall times."""
    import torch
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    transform = SimCLRTransform(input_size=input_size)

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return transform(Image.open(paths[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Files(), batch_size=images_per_batch, shuffle=True)
    loss_fn = NTXentLoss(temperature=temperature)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x0, x1 in loader:
            loss = loss_fn(model(x0), model(x1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def finetuner_041_preprocess(side: int):
    """Finetuner 0.4.1's own ``vision_preprocessor(side, side)``, runnable: its uint8 output
    for uri images made float in [0, 1] (the fix of FACTS.md). Needs the plugin off."""
    import numpy as np
    from finetuner.tuner.augmentation import vision_preprocessor

    upstream = vision_preprocessor(side, side)

    def preprocess(doc):
        return upstream(doc).astype(np.float32) / 255.0

    return preprocess

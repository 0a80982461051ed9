"""Activation: a plain ``import finetuner`` brings the plugin in, and only then.

These run in fresh interpreters, as a user's program would, against the installed package.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

MIRRORS = {
    "finetuner.tailor.pytorch.projection_head": ("ProjectionHead", "finetuner_selfsup.heads"),
    "finetuner.tuner.augmentation": ("vision_preprocessor", "finetuner_selfsup.augment.preprocessor"),
    "finetuner.tuner.pytorch.losses": ("NTXentLoss", "finetuner_selfsup.losses.ntxent"),
    "finetuner.tuner.pytorch.miner": ("TripletEasyHardMiner", "finetuner_selfsup.miners"),
}


def run_python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter outside the checkout; it prints one JSON line."""
    full_env = {k: v for k, v in os.environ.items() if k != "FINETUNER_SELFSUP_DISABLE"}
    full_env.update(env)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full_env, cwd="/", timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plain_import_finetuner_activates_the_plugin():
    result = run_python(
        """
        import json, sys
        import finetuner
        from finetuner.tailor.pytorch.projection_head import ProjectionHead
        from finetuner.tuner.augmentation import vision_preprocessor
        from finetuner.tuner.pytorch.losses import NTXentLoss, TripletLoss, SiameseLoss, TripletEasyHardMiner
        from finetuner.tuner.pytorch.miner import TripletEasyHardMiner as M2
        print(json.dumps({
            "fit": finetuner.fit.__module__,
            "head": ProjectionHead.__module__,
            "pre": vision_preprocessor.__module__,
            "ntx": NTXentLoss.__module__,
            "triplet": TripletLoss.__module__,
            "siamese": SiameseLoss.__module__,
            "miner_same": TripletEasyHardMiner is M2,
            "miner": M2.__module__,
            "albumentations": "albumentations" in sys.modules,
        }))
        """
    )
    assert result["fit"] == "finetuner_selfsup.fit"
    assert result["head"] == "finetuner_selfsup.heads"
    assert result["pre"].startswith("finetuner_selfsup.augment")
    assert result["ntx"].startswith("finetuner_selfsup.losses")
    assert result["triplet"].startswith("finetuner_selfsup.losses")
    assert result["siamese"].startswith("finetuner_selfsup.losses")
    assert result["miner"].startswith("finetuner_selfsup.miners")
    assert result["miner_same"] and not result["albumentations"]


def test_mirror_modules_keep_their_own_identity():
    result = run_python(
        """
        import json, sys
        import finetuner.tuner.augmentation as upstream_name
        import finetuner_selfsup.tuner.augmentation as ours
        print(json.dumps({"same": upstream_name is ours, "spec": ours.__spec__.name,
                          "parent_attr": sys.modules["finetuner.tuner"].augmentation is ours}))
        """
    )
    assert result == {"same": True, "spec": "finetuner_selfsup.tuner.augmentation", "parent_attr": True}


def test_start_up_imports_nothing_heavy():
    result = run_python(
        """
        import json, sys
        heavy = [m for m in ("torch", "torchvision", "docarray", "numpy", "finetuner", "PIL") if m in sys.modules]
        import finetuner
        after = [m for m in ("torch", "torchvision", "docarray") if m in sys.modules]
        print(json.dumps({"at_start": heavy, "plugin": "finetuner_selfsup" in sys.modules,
                          "after_finetuner": after}))
        """
    )
    assert result["plugin"] is True
    assert result["at_start"] == []
    # finetuner itself imports none of these; the plugin must not add them either
    assert result["after_finetuner"] == []


def test_environment_variable_switches_the_plugin_off_and_import_switches_it_on():
    off = run_python(
        """
        import json, sys
        import finetuner
        print(json.dumps({"plugin": "finetuner_selfsup" in sys.modules, "fit": finetuner.fit.__module__}))
        """,
        FINETUNER_SELFSUP_DISABLE="1",
    )
    assert off == {"plugin": False, "fit": "finetuner"}
    explicit = run_python(
        """
        import json
        import finetuner
        import finetuner.tuner.pytorch.losses as before
        import finetuner_selfsup
        import finetuner.tuner.pytorch.losses as after
        print(json.dumps({"fit": finetuner.fit.__module__, "before_has_ntx": before.NTXentLoss.__module__,
                          "after": after.NTXentLoss.__module__}))
        """,
        FINETUNER_SELFSUP_DISABLE="1",
    )
    assert explicit["fit"] == "finetuner_selfsup.fit"
    assert explicit["after"].startswith("finetuner_selfsup.losses")


def test_docarray_blob_names_are_aliases(tmp_path):
    import numpy as np
    from docarray import Document
    from PIL import Image

    import finetuner_selfsup  # noqa: F401  (activation; the .pth does it in user programs)

    path = tmp_path / "x.png"
    Image.fromarray(np.full((6, 5, 3), 200, dtype=np.uint8)).save(path)
    old = Document(uri=str(path)).load_uri_to_image_blob().set_image_blob_normalization().set_image_blob_channel_axis(-1, 0)
    new = Document(uri=str(path)).load_uri_to_image_tensor().set_image_tensor_normalization().set_image_tensor_channel_axis(-1, 0)
    assert old.tensor.shape == (3, 6, 5)
    np.testing.assert_array_equal(old.tensor, new.tensor)


def test_upstream_callbacks_work_on_numpy_2():
    import numpy as np

    import finetuner_selfsup  # noqa: F401
    from finetuner.tuner.callback import BestModelCheckpoint, EarlyStopping

    assert EarlyStopping()._best == np.inf
    assert BestModelCheckpoint(save_dir="unused", monitor="hit_at_1")._best == -np.inf
    assert not hasattr(np, "Inf") or np.__version__ < "2"


def test_the_public_tailor_is_the_plugins_for_torch_models():
    # ft.fit(to_embedding_model=True) used this package's tailor, but calling
    # ft.tailor.to_embedding_model directly reached upstream's: it crashed on a model with
    # a projection head and froze tensors by position for freeze=[names].
    result = run_python(
        """
        import json
        import finetuner as ft
        import torch
        from finetuner.tailor.pytorch.projection_head import ProjectionHead

        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
        with_head = ft.tailor.to_embedding_model(model, layer_name="flatten_4", input_size=(3, 8, 8),
                                                 projection_head=ProjectionHead(4, 3, 2))
        back = ft.tailor.to_embedding_model(with_head, layer_name="flatten_4", input_size=(3, 8, 8),
                                            freeze=["batchnorm2d_2"])
        frozen = sorted(n for n, p in back.named_parameters() if not p.requires_grad)
        try:
            ft.tailor.to_embedding_model(object())
            other = "no error"
        except Exception as error:  # upstream's dispatch, untouched for non-torch models
            other = type(error).__name__
        print(json.dumps({"with_head": type(with_head).__name__, "back": type(back).__name__,
                          "out": list(back(torch.zeros(2, 3, 8, 8)).shape), "frozen": frozen,
                          "route": ft.tailor.to_embedding_model.__module__, "other": other}))
        """
    )
    assert result["with_head"] == "EmbeddingModelWithHead"
    assert result["back"] == "Sequential" and result["out"] == [2, 4]
    assert result["frozen"] == ["1.bias", "1.weight"]
    assert result["route"].startswith("finetuner_selfsup") and result["other"] != "no error"

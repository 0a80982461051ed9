"""Tests of the tailor: upstream-compatible layer names, the cut, freezing, heads, devices."""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from finetuner_selfsup import tailoring_api
from finetuner_selfsup.devices import resolve_device
from finetuner_selfsup.heads import EmbeddingModelWithHead, ProjectionHead, is_model_with_head
from finetuner_selfsup.tailoring import LayerNameError, to_embedding_model, trace_layers

SMALL = (3, 32, 32)  # ResNet layer names do not depend on the image size; 32 px is cheap


def _names(layers):
    return [layer["name"] for layer in layers]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _frozen(model):
    return {name for name, p in model.named_parameters() if not p.requires_grad}


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None)


# --------------------------------------------------------------------------- tiny models


class Leaf(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.lin(x))


class Mid(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Leaf(width), Leaf(width)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class Deep(nn.Module):
    """Blocks nested 3 deep: body (Sequential) -> Mid -> blocks (ModuleList) -> Leaf -> lin."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.body = nn.Sequential(Mid(16), Mid(16))
        self.neck = nn.Linear(16, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.neck(self.body(self.stem(x))))


class Doubler(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], dim=1)


class Straddling(nn.Module):
    """``dup`` runs before and after ``down``: cutting at ``down`` cannot remove it."""

    def __init__(self) -> None:
        super().__init__()
        self.dup = Doubler()
        self.down = nn.Linear(8, 6)
        self.mix = nn.Linear(6, 6)

    def forward(self, x):
        return self.dup(self.mix(self.down(self.dup(x))))


class SharedRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.b(self.relu(self.a(x))))


# --------------------------------------------------------------------------- names


def test_resnet50_avgpool_name_at_224(resnet50):
    layers = trace_layers(resnet50, input_size=(3, 224, 224))
    pool = {layer["name"]: layer for layer in layers}["adaptiveavgpool2d_173"]
    assert pool["module_name"] == "avgpool"
    assert pool["output_shape"] == [2, 2048, 1, 1]
    assert pool["output_features"] == 2048 and pool["is_embedding_layer"]
    assert layers[-1]["name"] == "linear_174"


def test_resnet18_names_equal_upstream_summary(resnet18):
    layers = trace_layers(resnet18, input_size=(3, 224, 224))
    assert "adaptiveavgpool2d_67" in _names(layers)
    try:
        from finetuner.tailor.pytorch import PytorchTailor
    except ModuleNotFoundError as err:  # the plugin's patch of `finetuner` needs its fit module
        if (err.name or "").startswith("finetuner_selfsup"):
            pytest.skip(f"`import finetuner` fails while {err.name} is not written yet")
        raise
    upstream = PytorchTailor(resnet18, (3, 224, 224)).summary()
    assert _names(layers) == _names(upstream)
    assert [l["module_name"] for l in layers] == [l["module_name"] for l in upstream]
    assert [int(l["nb_params"]) for l in layers] == [int(l["nb_params"]) for l in upstream]


def test_module_called_twice_gets_two_names():
    names = _names(trace_layers(SharedRelu(), input_size=(4,)))
    assert names == ["linear_1", "relu_2", "linear_3", "relu_4"]


def test_missing_input_size_says_what_to_pass(resnet18):
    with pytest.raises(ValueError, match=r"input_size=\(3, 224, 224\)"):
        trace_layers(resnet18)
    with pytest.raises(ValueError, match=r"input_size=\(3, 224, 224\)"):
        to_embedding_model(resnet18, layer_name="adaptiveavgpool2d_67")


def test_trace_leaves_model_untouched():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.train()
    before = _state(model)
    trace_layers(model, input_size=(4,))
    assert model.training and all(m.training for m in model.modules())
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included


def test_names_inside_model_with_head_match_bare_backbone(resnet18):
    bare = trace_layers(resnet18, input_size=SMALL)
    wrapped = trace_layers(EmbeddingModelWithHead(resnet18, ProjectionHead(1000)), input_size=SMALL)
    assert _names(wrapped[: len(bare)]) == _names(bare)
    assert [l["module_name"] for l in wrapped[: len(bare)]] == [
        "embed_model." + l["module_name"] for l in bare
    ]
    assert wrapped[len(bare)]["module_name"] == "embed_model"  # the backbone, once it completes


# --------------------------------------------------------------------------- the cut


def test_tutorial_round_trip_resnet50(resnet50, caplog):
    """fit(projection_head=...) then fit(model=tuned, to_embedding_model=True, layer_name=...)."""
    with_head = to_embedding_model(
        resnet50, "adaptiveavgpool2d_173", input_size=SMALL, projection_head=ProjectionHead(2048)
    )
    assert is_model_with_head(with_head)
    assert isinstance(with_head.embed_model.fc, nn.Identity)
    assert with_head.eval()(torch.rand(2, *SMALL)).shape == (2, 128)

    with caplog.at_level(logging.INFO, logger="finetuner_selfsup"):
        backbone = to_embedding_model(with_head, layer_name="adaptiveavgpool2d_173", input_size=SMALL)
    assert "projection head was removed" in caplog.text
    assert isinstance(backbone, torchvision.models.ResNet) and not is_model_with_head(backbone)
    assert backbone.eval()(torch.rand(3, *SMALL)).shape == (3, 2048)
    assert isinstance(resnet50.fc, nn.Linear)  # the user's model still has its classifier


def test_resnet18_cut_from_model_with_head(resnet18):
    with_head = EmbeddingModelWithHead(
        to_embedding_model(resnet18, "adaptiveavgpool2d_67", input_size=SMALL), ProjectionHead(512)
    )
    backbone = to_embedding_model(with_head, layer_name="adaptiveavgpool2d_67", input_size=SMALL)
    assert backbone.eval()(torch.rand(2, *SMALL)).shape == (2, 512)


def test_upstream_plain_sequential_is_a_model_with_head(resnet18):
    plain = nn.Sequential(OrderedDict(embed_model=resnet18, projection_head=ProjectionHead(1000)))
    assert is_model_with_head(plain)
    backbone = to_embedding_model(plain, layer_name="adaptiveavgpool2d_67", input_size=SMALL)
    assert isinstance(backbone, torchvision.models.ResNet)
    assert backbone.eval()(torch.rand(2, *SMALL)).shape == (2, 512)


def test_user_model_is_not_modified(resnet18):
    for p in resnet18.layer1.parameters():
        p.requires_grad = False
    try:
        grads = {n: p.requires_grad for n, p in resnet18.named_parameters()}
        before = _state(resnet18)
        to_embedding_model(resnet18, "adaptiveavgpool2d_67", input_size=SMALL, freeze=True)
        assert isinstance(resnet18.fc, nn.Linear) and resnet18.training
        assert {n: p.requires_grad for n, p in resnet18.named_parameters()} == grads
        after = _state(resnet18)
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        for p in resnet18.layer1.parameters():
            p.requires_grad = True


def test_default_layer_is_the_last_embedding_layer(resnet18):
    model = to_embedding_model(resnet18, input_size=SMALL, unknown_fit_argument=1)  # kwargs ignored
    assert isinstance(model.fc, nn.Linear)  # last layer: nothing cut
    assert model.eval()(torch.rand(2, *SMALL)).shape == (2, 1000)


def test_nested_cut_three_deep():
    torch.manual_seed(0)
    model = Deep()
    names = {l["name"]: l["module_name"] for l in trace_layers(model, input_size=(8,))}
    cut_name = next(n for n, path in names.items() if path == "body.0.blocks.1.lin")
    # Upstream's `nested_module, layer = name.split('.')` raises on these paths.
    cut = to_embedding_model(model, layer_name=cut_name, input_size=(8,))
    assert isinstance(cut.body[0].blocks[1].act, nn.Identity)
    assert isinstance(cut.body[1], nn.Identity)
    assert isinstance(cut.neck, nn.Identity) and isinstance(cut.fc, nn.Identity)
    assert isinstance(cut.body[0].blocks[0].lin, nn.Linear)
    x = torch.rand(5, 8)
    expected = model.body[0].blocks[1].lin(model.body[0].blocks[0](model.stem(x)))
    torch.testing.assert_close(cut(x), expected)
    assert isinstance(model.fc, nn.Linear) and isinstance(model.body[1], Mid)


def test_module_called_before_and_after_cannot_be_cut():
    with pytest.raises(ValueError, match=r"called both before and after.*\['dup'\]"):
        to_embedding_model(Straddling(), layer_name="linear_2", input_size=(4,))


def test_shared_module_kept_warns_when_values_differ(caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        cut = to_embedding_model(SharedRelu(), layer_name="linear_3", input_size=(4,))
    assert isinstance(cut.relu, nn.ReLU)  # also ran before the cut, so it stays
    assert "other values" in caplog.text


def test_unknown_layer_name_lists_embedding_layers(resnet18):
    with pytest.raises(ValueError, match=r"adaptiveavgpool2d_67.*finetuner\.display") as info:
        to_embedding_model(resnet18, layer_name="nope_1", input_size=SMALL)
    assert isinstance(info.value, KeyError)  # upstream raised KeyError; both work


def test_feature_map_layer_is_not_an_embedding_layer(resnet18):
    with pytest.raises(LayerNameError, match=r"conv2d_1.*not one vector"):
        to_embedding_model(resnet18, layer_name="conv2d_1", input_size=SMALL)


# --------------------------------------------------------------------------- freezing


def test_freeze_true_freezes_backbone_not_head(resnet18):
    model = to_embedding_model(
        resnet18, "adaptiveavgpool2d_67", input_size=SMALL, freeze=True,
        projection_head=ProjectionHead(512),
    )
    assert all(not p.requires_grad for p in model.embed_model.parameters())
    assert all(p.requires_grad for p in model.projection_head.parameters())


def test_freeze_list_freezes_exactly_the_named_layers(resnet18):
    # Upstream zipped the names with model.parameters() by position: ['conv2d_1'] froze
    # conv1.weight only by luck of being first, and e.g. ['batchnorm2d_2'] froze bn1.weight
    # while ['relu_3'] froze bn1.bias, a parameter of another layer.
    model = to_embedding_model(resnet18, "adaptiveavgpool2d_67", input_size=SMALL, freeze=["conv2d_1"])
    assert _frozen(model) == {"conv1.weight"}
    model = to_embedding_model(resnet18, "adaptiveavgpool2d_67", input_size=SMALL, freeze=["relu_3"])
    assert _frozen(model) == set()
    layers = {l["name"]: l["module_name"] for l in trace_layers(resnet18, input_size=SMALL)}
    block = next(n for n, path in layers.items() if path == "layer2.0")
    model = to_embedding_model(
        resnet18, "adaptiveavgpool2d_67", input_size=SMALL, freeze=["batchnorm2d_2", block]
    )
    expected = {"bn1.weight", "bn1.bias"} | {
        f"layer2.0.{n}" for n, _ in resnet18.layer2[0].named_parameters()
    }
    assert _frozen(model) == expected


def test_freeze_name_of_a_cut_layer_is_ignored_with_a_warning(resnet18, caplog):
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        model = to_embedding_model(
            resnet18, "adaptiveavgpool2d_67", input_size=SMALL, freeze=["linear_68"]
        )
    assert _frozen(model) == set() and "['linear_68']" in caplog.text


def test_freeze_unknown_name_lists_valid_names(resnet18):
    with pytest.raises(ValueError, match=r"\['conv_99'\].*conv2d_1"):
        to_embedding_model(resnet18, "adaptiveavgpool2d_67", input_size=SMALL, freeze=["conv_99"])


# --------------------------------------------------------------------------- heads, devices


def test_head_width_mismatch_says_what_to_build(resnet18):
    with pytest.raises(ValueError, match=r"expects 2048 features but layer adaptiveavgpool2d_67 "
                                         r"outputs 512; use ProjectionHead\(in_features=512"):
        to_embedding_model(resnet18, "adaptiveavgpool2d_67", input_size=SMALL,
                           projection_head=ProjectionHead(2048))


def test_head_width_found_without_in_features_attribute():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    with pytest.raises(ValueError, match=r"expects 5 features but layer relu_2 outputs 6"):
        to_embedding_model(model, "relu_2", input_size=(4,), projection_head=nn.Sequential(nn.Linear(5, 2)))
    with pytest.raises(ValueError, match=r"ProjectionHead\(in_features=6"):
        to_embedding_model(model, "relu_2", input_size=(4,), projection_head=nn.Unflatten(1, (2, 2)))
    ok = to_embedding_model(model, "relu_2", input_size=(4,), projection_head=nn.Softmax(dim=1))
    assert is_model_with_head(ok)


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"CUDA is not available.*device='cpu'"):
        resolve_device("cuda:1")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        to_embedding_model(nn.Linear(2, 2), input_size=(2,), device="cuda")


# --------------------------------------------------------------------------- API module


def test_api_module_is_light_and_delegates(capsys):
    code = (
        "import sys, finetuner_selfsup.tailoring_api; "
        "assert 'torch' not in sys.modules, 'tailoring_api imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
    model = tailoring_api.to_embedding_model(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)),
                                             layer_name="linear_1", input_size=(4,))
    assert isinstance(model[1], nn.Identity)
    tailoring_api.display(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), input_size=(4,))
    out = capsys.readouterr().out
    assert "linear_1" in out and "relu_2" in out


def _env():
    import os

    spec = importlib.util.find_spec("finetuner_selfsup")
    root = os.path.dirname(os.path.dirname(spec.origin))
    return {**os.environ, "PYTHONPATH": root}


# --------------------------------------------------------------------------- edge models


class _PooledClassifier(nn.Module):
    """conv -> pool -> flatten -> fc, the classifier also registered as ``fc2`` (which the
    forward uses) -- one module under two names."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)
        self.fc2 = self.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.conv(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def test_a_module_with_two_names_is_cut_under_both():
    model = _PooledClassifier()
    cut = to_embedding_model(model, layer_name="adaptiveavgpool2d_2", input_size=(3, 12, 12))
    assert isinstance(cut.fc, nn.Identity) and isinstance(cut.fc2, nn.Identity)
    x = torch.rand(3, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(cut(x), model.features(x))
    assert isinstance(model.fc2, nn.Linear)  # the user's model is untouched


def test_a_layer_returning_a_one_element_tuple_is_traced():
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 6)

        def forward(self, x):
            return (self.linear(x),)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = Encoder()
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.enc(x)[0])

    layers = trace_layers(Model(), input_size=(4,))
    assert _names(layers) == ["linear_1", "encoder_2", "linear_3"]
    assert layers[1]["output_shape"] == [2, 6] and layers[1]["is_embedding_layer"]
    cut = to_embedding_model(Model(), layer_name="linear_1", input_size=(4,))
    assert list(cut(torch.rand(3, 4)).shape) == [3, 6]


def test_input_size_of_numpy_integers():
    np = pytest.importorskip("numpy")
    model = _PooledClassifier()
    cut = to_embedding_model(model, layer_name="adaptiveavgpool2d_2", input_size=np.array([3, 12, 12]))
    assert list(cut(torch.rand(2, 3, 12, 12)).shape) == [2, 8]
    with pytest.raises(ValueError, match="input_size"):
        to_embedding_model(model, input_size=[(3, 12, 12), 2.5])


def test_a_branch_that_runs_only_in_training_is_a_clear_error():
    class WithAuxiliary(_PooledClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.aux = nn.Linear(8, 5)

        def forward(self, x):
            features = self.features(x)
            if self.training:  # as GoogLeNet/Inception's auxiliary classifiers
                return self.fc2(features), self.aux(features)
            return self.fc2(features)

    model = WithAuxiliary()
    with pytest.raises(ValueError, match="training mode.*aux_logits=False"):
        to_embedding_model(model, layer_name="adaptiveavgpool2d_2", input_size=(3, 12, 12))
    assert model.training and isinstance(model.fc2, nn.Linear)  # the user's model as it was


def test_fit_says_that_input_size_is_unused_without_tailoring(caplog):
    from docarray import Document, DocumentArray

    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    docs = DocumentArray(Document(tensor=torch.rand(4).numpy()) for _ in range(4))
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        fit(nn.Linear(4, 3), docs, epochs=1, batch_size=4, loss=NTXentLoss(), input_size=(4,),
            preprocess_fn=lambda d: torch.as_tensor(d.tensor) + 0.1 * torch.randn(4))
    assert "input_size" in caplog.text and "ignored without to_embedding_model=True" in caplog.text


def test_tailoring_leaves_the_callers_random_stream_alone():
    # fit seeds, then tailors: the training-mode check runs dropout, which must not draw
    # from the caller's generator (fit(seed=...) would otherwise train differently)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    to_embedding_model(model, layer_name="linear_3", input_size=(4,))
    assert torch.equal(torch.rand(5), expected)

"""The paper's three model families, built from the registry for every dataset's input shape.

Ash & Adams use ResNet-18 (He et al.), a three-layer MLP with 100 tanh hidden units, and logistic
regression, on CIFAR-10/100 and SVHN (3x32x32) and, in this project, Fashion-MNIST (1x28x28) and
mnist1d (40-long vectors).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from warmstart.components.models import MODELS, build_model, count_parameters
from warmstart.core.spec import ModelSpec, SpecError

INPUT_SHAPES = {"cifar-svhn": (3, 32, 32), "fashion-mnist": (1, 28, 28), "mnist1d": (40,)}



def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_the_papers_models_are_registered():
    assert {"mlp", "logreg", "resnet18"} <= set(MODELS)


# archs that need options (tests/test_user_data.py): the user's builder stands in by a registered one;
# torchvision's models take images only
NEEDS_OPTIONS = {"python": {"factory": "warmstart.components.models:mlp"}}


@pytest.mark.parametrize("shape", INPUT_SHAPES.values(), ids=INPUT_SHAPES.keys())
@pytest.mark.parametrize("arch", sorted(set(MODELS) - {"torchvision"}))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_every_model_gives_logits_for_every_dataset_shape(arch, shape, num_classes):
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, NEEDS_OPTIONS.get(arch, {})), shape, num_classes)
    x = torch.randn(3, *shape)
    for mode in (True, False):  # train mode (BatchNorm batch stats) and eval mode (running stats)
        model.train(mode)
        logits = model(x)
        assert logits.shape == (3, num_classes)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    # each sample's logits depend on that sample's input
    model.eval()
    y = x.clone()
    y[0] = torch.randn(*shape)
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:], atol=1e-5)


@pytest.mark.parametrize("shape", INPUT_SHAPES.values(), ids=INPUT_SHAPES.keys())
def test_mlp_is_three_linear_layers_of_100_tanh_units_by_default(shape):
    model = build_model(ModelSpec("mlp"), shape, 10)
    in_features = int(torch.tensor(shape).prod())
    assert [(l.in_features, l.out_features) for l in linears(model)] == [(in_features, 100), (100, 100), (100, 10)]
    assert all(l.bias is not None for l in linears(model))
    activations = [m for m in model.modules() if isinstance(m, (nn.Tanh, nn.ReLU))]
    assert len(activations) == 2 and all(isinstance(a, nn.Tanh) for a in activations)
    # the output is the last Linear's logits: no activation after it
    assert isinstance(list(model.modules())[-1], nn.Linear)


def test_mlp_uses_relu_when_asked():
    model = build_model(ModelSpec("mlp", {"activation": "relu"}), (3, 32, 32), 10)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.Tanh) for m in model.modules())
    assert len(linears(model)) == 3
    # and the activation is really applied: a negative pre-activation gives exactly 0 hidden output
    first, act = model[1], model[2]
    with torch.no_grad():
        h = act(first(model[0](torch.randn(4, 3, 32, 32))))
    assert (h >= 0).all() and (h == 0).any()


@pytest.mark.parametrize("shape", INPUT_SHAPES.values(), ids=INPUT_SHAPES.keys())
def test_logreg_is_a_single_linear_layer(shape):
    model = build_model(ModelSpec("logreg"), shape, 10)
    in_features = int(torch.tensor(shape).prod())
    assert [(l.in_features, l.out_features) for l in linears(model)] == [(in_features, 10)]
    assert not any(isinstance(m, (nn.Tanh, nn.ReLU, nn.Conv1d, nn.Conv2d)) for m in model.modules())
    assert count_parameters(model) == in_features * 10 + 10


def test_resnet18_width_64_has_11_17m_parameters_and_width_16_about_0_70m():
    n64 = count_parameters(build_model(ModelSpec("resnet18", {"width": 64}), (3, 32, 32), 10))
    n16 = count_parameters(build_model(ModelSpec("resnet18", {"width": 16}), (3, 32, 32), 10))
    assert abs(n64 - 11.17e6) <= 0.01e6, n64
    assert abs(n16 - 0.70e6) <= 0.01e6, n16
    # the default is He et al.'s width
    assert count_parameters(build_model(ModelSpec("resnet18"), (3, 32, 32), 10)) == n64


def test_resnet18_has_eight_basic_blocks_with_64_to_512_channels():
    model = build_model(ModelSpec("resnet18"), (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # stem + 8 blocks x 2 convs + 3 projection shortcuts
    assert len(convs) == 1 + 16 + 3
    assert sorted({c.out_channels for c in convs}) == [64, 128, 256, 512]
    assert linears(model)[-1].in_features == 512 and linears(model)[-1].out_features == 10


def test_resnet18_cifar_stem_is_3x3_stride_1_without_max_pool():
    model = build_model(ModelSpec("resnet18"), (3, 32, 32), 10)
    first_conv = next(m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))
    assert isinstance(first_conv, nn.Conv2d)
    assert first_conv.in_channels == 3 and first_conv.out_channels == 64
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1) and first_conv.padding == (1, 1)
    assert not any(isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) for m in model.modules())
    # so the first stage still sees the full 32x32 image (ImageNet's stem would give 8x8)
    seen = []
    handle = model.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    handle.remove()
    assert seen == [torch.Size([2, 64, 32, 32])]


def test_resnet18_runs_1d_convolutions_on_vectors():
    model = build_model(ModelSpec("resnet18", {"width": 4}), (40,), 10)
    assert any(isinstance(m, nn.Conv1d) for m in model.modules())
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


def test_unknown_arch_raises_spec_error_naming_the_key():
    with pytest.raises(SpecError, match=r"^model\.arch: .*'vgg19'") as info:
        build_model(ModelSpec("vgg19"), (3, 32, 32), 10)
    assert "resnet18" in str(info.value)  # and says what is known


@pytest.mark.parametrize("arch, options, pattern", [
    ("mlp", {"activation": "gelu"}, r"^model\.options\.activation: .*'gelu'"),
    ("mlp", {"depth": 0}, r"^model\.options\.depth: "),
    ("mlp", {"hiden": 100}, r"^model\.options: .*'hiden'"),
    ("logreg", {"hidden": 100}, r"^model\.options: .*'hidden'"),
    ("resnet18", {"width": 0}, r"^model\.options\.width: "),
    ("resnet18", {"depth": 34}, r"^model\.options: .*'depth'"),
    ("vgg16", {"width": 0}, r"^model\.options\.width: "),
    ("vit", {"dim": 16, "heads": 3}, r"^model\.options\.heads: "),
    ("vit", {"patch": 64}, r"^model\.options\.patch: "),
    ("vit", {"mlp_ratio": "4"}, r"^model\.options\.mlp_ratio: "),
])
def test_bad_model_options_raise_spec_error_naming_the_key(arch, options, pattern):
    with pytest.raises(SpecError, match=pattern):
        build_model(ModelSpec(arch, options), (3, 32, 32), 10)


def test_building_is_reproducible_under_a_seed():
    def weights(seed):
        torch.manual_seed(seed)
        return build_model(ModelSpec("resnet18", {"width": 4}), (3, 32, 32), 10).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# -- VGG-16 and a small ViT --------------------------------------------------------------------------------

SMALL = {"vgg16": {"width": 4}, "vit": {"dim": 16, "depth": 2, "heads": 2}}


@pytest.mark.parametrize("shape", INPUT_SHAPES.values(), ids=INPUT_SHAPES.keys())
@pytest.mark.parametrize("arch", sorted(SMALL))
def test_vgg16_and_vit_train_on_every_dataset_shape_and_their_head_is_the_last_linear_layer(arch, shape):
    from warmstart.components.models import head_parameter_names

    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, SMALL[arch]), shape, 10)
    logits = model(torch.randn(4, *shape))
    assert logits.shape == (4, 10)
    logits.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    head = {"vgg16": "classifier", "vit": "head"}[arch]
    assert head_parameter_names(model) == [f"{head}.weight", f"{head}.bias"]
    assert not MODELS[arch].stackable


def test_vgg16_is_13_batchnormed_3x3_convolutions_of_64_to_512_channels_five_pools_and_one_linear_classifier():
    model = build_model(ModelSpec("vgg16"), (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert [(l.in_features, l.out_features) for l in linears(model)] == [(512, 10)]
    assert [c.out_channels for c in build_model(ModelSpec("vgg16", {"width": 16}), (3, 32, 32), 10).modules()
            if isinstance(c, nn.Conv2d)][::3] == [16, 32, 64, 128, 128]


def test_vit_cuts_images_and_vectors_into_patches_with_a_class_token():
    vit = build_model(ModelSpec("vit", SMALL["vit"]), (3, 32, 32), 10)
    assert vit.pos_embed.shape == (1, 8 * 8 + 1, 16)  # 4x4 patches of 32x32, and the class token
    assert build_model(ModelSpec("vit", SMALL["vit"]), (1, 28, 28), 10).pos_embed.shape == (1, 7 * 7 + 1, 16)
    vector = build_model(ModelSpec("vit", SMALL["vit"]), (40,), 10)
    assert isinstance(vector.patch_embed, nn.Conv1d) and vector.pos_embed.shape == (1, 10 + 1, 16)


# Parameter counts at the defaults on 3x32x32 with 10 classes (docs/models.md lists them).
DEFAULT_COUNTS = {"vgg16": 14_724_042, "vit": 2_693_578}


@pytest.mark.parametrize("arch", sorted(DEFAULT_COUNTS))
def test_vgg16_and_vit_have_their_documented_parameter_counts_at_their_defaults(arch):
    assert count_parameters(build_model(ModelSpec(arch), (3, 32, 32), 10)) == DEFAULT_COUNTS[arch]


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_the_libraries_a_model_declares_for_the_job_server_are_importable_modules(arch):
    for library in MODELS[arch].libraries:
        assert importlib.util.find_spec(library) is not None, library

"""The latency table (bench/latency.py): its grid, its interpolation, its blocks as written and timed, its cache."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeticket.bench import get_device
from edgeticket.bench.latency import ConvBlock, LatencyTable, conv_blocks, grid_blocks, grid_levels, measure
from edgeticket.models.archs import get_model
from edgeticket.runtimes import get_runtime

BLOCK = ConvBlock(64, 128, (3, 3), (2, 2), (1, 1), (1, 1), 1, 28, 28)


def test_grid_levels_are_multiples_of_round_to_from_round_to_to_the_width():
    assert grid_levels(64, 8) == [8, 16, 24, 32, 40, 48, 56, 64]
    levels = grid_levels(512, 8)
    assert levels[0] == 8 and levels[-1] == 512 and all(level % 8 == 0 for level in levels)
    assert len(levels) == 9 and levels == sorted(set(levels))
    assert grid_levels(3, 8) == [3] and grid_levels(12, 8) == [8, 12]  # narrower than round_to: whole


def test_interpolation_is_exact_for_a_bilinear_cost(tmp_path, monkeypatch):
    """Bilinear interpolation reproduces a + b*in + c*out + d*in*out anywhere, grid point or not."""
    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path))
    table = LatencyTable.for_device(get_device("ort-cpu-1t"), "test", (3, 28, 28))
    ins, outs = grid_levels(64, 8), grid_levels(128, 8)

    def cost(i, o):
        return 0.3 + 0.01 * i + 0.02 * o + 0.001 * i * o

    for block in grid_blocks(BLOCK, ins, outs):
        table.points[block.key] = cost(block.in_channels, block.out_channels)
    for i, o in [(64, 128), (8, 16), (20, 100), (44, 17), (61, 127), (4, 200)]:  # the last beyond the grid
        assert table.block_ms(BLOCK, ins, outs, i, o) == pytest.approx(cost(i, o))
    depthwise = ConvBlock(32, 32, (3, 3), (1, 1), (1, 1), (1, 1), 32, 14, 14)
    levels = grid_levels(32, 8)
    assert [b.groups for b in grid_blocks(depthwise, levels, levels)] == levels  # the diagonal only
    for block in grid_blocks(depthwise, levels, levels):
        table.points[block.key] = 2.0 * block.in_channels
    assert table.block_ms(depthwise, levels, levels, 20, 20) == pytest.approx(40.0)


def test_conv_blocks_see_each_layers_input_size():
    model = get_model("small_resnet", num_classes=10, in_channels=1)
    blocks = conv_blocks(model, torch.zeros(1, 1, 28, 28))
    assert (blocks["conv1"].in_channels, blocks["conv1"].height) == (1, 28)
    assert (blocks["layer2.0.conv1"].height, blocks["layer2.0.conv1"].stride) == (28, (2, 2))
    assert blocks["layer2.0.conv2"].height == 14 and blocks["layer4.0.downsample.0"].kernel == (1, 1)
    assert len(blocks) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def test_conv_blocks_take_the_activation_that_follows():
    """onnxruntime fuses a ReLU into the conv but runs a hardswish or SiLU as its own pass: the block times it."""
    blocks = conv_blocks(get_model("mobilenet_v3_small", num_classes=10), torch.zeros(1, 3, 64, 64))
    assert [blocks[n].activation for n in ("features.0.0", "features.1.block.0.0", "features.1.block.1.fc2",
                                           "features.1.block.2.0")] == ["hardswish", "relu", "hardsigmoid", "none"]
    blocks = conv_blocks(get_model("resnet18", num_classes=10), torch.zeros(1, 3, 64, 64))
    assert blocks["layer2.0.conv2"].activation == "none"  # its ReLU comes after the downsample and the addition
    assert blocks["layer2.0.conv1"].activation == "relu"
    assert conv_blocks(get_model("efficientnet_b0", num_classes=10), torch.zeros(1, 3, 64, 64))[
        "features.1.0.block.1.fc2"].activation == "sigmoid"


@pytest.mark.parametrize("block", [BLOCK, ConvBlock(16, 16, (3, 3), (1, 1), (1, 1), (1, 1), 16, 10, 12),
                                   ConvBlock(8, 24, (1, 3), (1, 2), (0, 1), (2, 2), 1, 9, 9)] + [
    ConvBlock(8, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, 6, 6, activation)
    for activation in ("relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "none")])
def test_onnx_block_computes_what_the_torch_block_does(tmp_path, block):
    """onnxruntime's fast block writer builds the graph by hand: with its weights copied into torch's block,
    both give the same output, so stride, padding, dilation and groups are where torch puts them."""
    import onnx
    from onnx import numpy_helper
    path = tmp_path / "block.onnx"
    get_runtime("onnxruntime").write_block(block, path)
    weight = next(numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name == "w")
    module = block.module()
    module[0].weight.data = torch.from_numpy(weight.copy())
    images = np.random.default_rng(1).random(block.input_shape, dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": images})[0]
    with torch.no_grad():
        want = module(torch.from_numpy(images)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_measure_times_blocks_and_networks_in_one_runner(tmp_path, monkeypatch):
    from edgeticket.bench import transport
    calls = []
    real = transport.run_local
    monkeypatch.setattr("edgeticket.bench.latency.run_local", lambda *a, **k: calls.append(a) or real(*a, **k))
    blocks = [ConvBlock(8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, 8, 8), ConvBlock(8, 16, (1, 1), (1, 1), (0, 0),
                                                                                   (1, 1), 1, 8, 8)]
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten()).eval()
    block_ms, network_ms = measure(get_device("ort-cpu-1t"), blocks, [(network, torch.zeros(1, 1, 8, 8))])
    assert len(calls) == 1 and len(block_ms) == 2 and len(network_ms) == 1
    assert all(ms > 0 for ms in block_ms + network_ms)


def test_the_table_is_kept_per_device_threads_and_runtime_version(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path))
    one = LatencyTable.for_device(get_device("ort-cpu-1t"), "small_resnet", (1, 28, 28))
    one.points["x"] = 1.5
    one.save()
    assert LatencyTable.for_device(get_device("ort-cpu-1t"), "small_resnet", (1, 28, 28)).points == {"x": 1.5}
    assert LatencyTable.for_device(get_device("ort-cpu-4t"), "small_resnet", (1, 28, 28)).points == {}
    assert LatencyTable.for_device(get_device("ort-cpu-1t"), "small_resnet", (1, 32, 32)).points == {}
    assert str(one.path).startswith(str(tmp_path / "latency"))
    from dataclasses import replace
    newer = LatencyTable(replace(one.key, runtime_version="99.0"))
    assert newer.points == {} and newer.path != one.path


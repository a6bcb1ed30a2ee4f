"""vismtl.wsi.graphed: the model replayed as a CUDA graph gives the model's outputs (GPU), and
what cannot be captured runs as it is, with one warning (everywhere)."""

from __future__ import annotations

import pytest
import torch

from vismtl.config import ConfigError
from vismtl.wsi import WSISettings
from vismtl.wsi.graphed import GraphedForward, ModelGraph

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


class SmallModel(torch.nn.Module):
    """Convolutions, batch norm (eval: per sample) and two heads, one activated by softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.dense, self.patch = torch.nn.Conv2d(8, 3, 1), torch.nn.Linear(8, 4)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(images.float() / 255)
        return {"dense": self.dense(features).softmax(dim=1), "patch": self.patch(features.mean(dim=(2, 3)))}


def batches(device, sizes=(8, 3, 8)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    made = [torch.randint(0, 256, (n, 3, 24, 20), generator=generator, dtype=torch.uint8) for n in sizes]
    return [b.to(device).contiguous(memory_format=torch.channels_last) for b in made]


def test_settings_refuse_a_graph_and_compile_together():
    with pytest.raises(ConfigError, match="cuda_graph and wsi.compile"):
        WSISettings(cuda_graph=True, compile=True)
    with pytest.raises(ConfigError, match="cuda_graph must be True or False"):
        WSISettings(cuda_graph="yes")


def test_what_cannot_be_captured_runs_as_it_is_with_one_warning_per_kind_of_batch(caplog):
    """On the CPU nothing can be captured: the engine's graph gives None (it runs the model itself)
    and says why once for batches of one kind, again for another kind."""
    model = SmallModel().eval()
    graph = ModelGraph(model)
    with caplog.at_level("WARNING", logger="vismtl"):
        first, second, *_ = batches("cpu")
        assert graph(first, 8) is None and graph(second, 8) is None  # one kind: size 8, this tile
        assert caplog.text.count("could not be captured as a CUDA graph") == 1
        assert "ValueError: a CUDA graph needs images on a CUDA device, not cpu" in caplog.text
        assert graph(first, 16) is None  # batches of 16: another graph, another try
        assert graph(second, 8) is None  # back to batches of 8: known, not tried again
        assert caplog.text.count("could not be captured as a CUDA graph") == 2
    small = ModelGraph(model, kept=1)
    with caplog.at_level("WARNING", logger="vismtl"):
        for size in (8, 16, 8):  # one kind kept: the first is forgotten, so tried again
            assert small(first, size) is None
    assert caplog.text.count("could not be captured as a CUDA graph") == 5


@needs_gpu
def test_a_graph_replays_the_model_on_padded_batches_and_its_outputs_stay():
    model = SmallModel().cuda().eval()
    images = batches("cuda")
    with torch.inference_mode():
        graphed = GraphedForward(model, images[0], size=8)
        replayed = [graphed(b) for b in images]
        for batch, outputs in zip(images, replayed):  # earlier outputs are not overwritten by later replays
            expected = model(batch)
            for name in expected:
                assert outputs[name].shape == expected[name].shape
                torch.testing.assert_close(outputs[name], expected[name], rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="a batch of 9 images for a graph of 8"):
            graphed(torch.cat([images[0], images[1][:1]]))


@needs_gpu
def test_a_model_that_synchronises_with_the_host_runs_as_it_is(caplog):
    class Synchronising(SmallModel):
        def forward(self, images):
            if images.float().mean().item() < 0:  # a value read on the host: not capturable
                raise AssertionError
            return super().forward(images)

    model = Synchronising().cuda().eval()
    with torch.inference_mode(), caplog.at_level("WARNING", logger="vismtl"):
        assert ModelGraph(model)(batches("cuda")[0], 8) is None
    assert "could not be captured as a CUDA graph" in caplog.text

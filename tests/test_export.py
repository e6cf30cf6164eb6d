"""ONNX export of the fused form: onnxruntime gives the same detections as PyTorch."""

import numpy as np
import pytest
import torch

import spikeyolo
from spikeyolo.cli import main
from spikeyolo.export.onnx import export_onnx

ort = pytest.importorskip("onnxruntime")


def test_onnx_matches_pytorch_and_batch_is_dynamic(tmp_path):
    torch.manual_seed(0)
    model = spikeyolo.build_model("n", nc=2, width=0.125).eval()
    result = export_onnx(model, tmp_path / "m.onnx", imgsz=64)
    assert result["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(result["path"])
    x = torch.rand(3, 3, 64, 64)
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_event_model_and_cli(tmp_path, capsys):
    model = spikeyolo.build_model("n", nc=2, width=0.125, T=2, in_channels=2).eval()
    weights = spikeyolo.save(model, tmp_path / "ev.pt")
    assert main(["export", "--weights", str(weights), "--imgsz", "64"]) == 0
    assert "onnxruntime max |diff|" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "ev.onnx"))
    x = torch.rand(1, 2, 2, 64, 64)
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)

"""The install guard: exactly one ONNX Runtime distribution, and this environment has the CPU one working."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

from eva_runtime.onnx_install import OnnxRuntimeInstallError, installed_onnxruntime


def versions(*present: str):
    def version_of(name: str) -> str:
        if name not in present:
            raise metadata.PackageNotFoundError(name)
        return "1.0"

    return version_of


def test_one_distribution_is_accepted() -> None:
    assert installed_onnxruntime(versions("onnxruntime-gpu")) == ("onnxruntime-gpu", "1.0")


def test_both_distributions_are_refused_with_the_fix() -> None:
    with pytest.raises(OnnxRuntimeInstallError, match="uninstall"):
        installed_onnxruntime(versions("onnxruntime", "onnxruntime-gpu"))


def test_none_is_refused_with_the_install_command() -> None:
    with pytest.raises(OnnxRuntimeInstallError, match=r"eva-runtime\[runtime\]"):
        installed_onnxruntime(versions())


def test_this_environment_runs_a_real_onnx_graph_on_cpu() -> None:
    name, _ = installed_onnxruntime()
    assert name == "onnxruntime"
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    assert np.array_equal(y, np.maximum(x, 0))

"""The YAHPO LCBench surrogate read directly with onnxruntime, without yahpo-gym.

yahpo-gym 1.0.2 caps numpy below 2 and ConfigSpace at 0.6.1, and neither release runs on numpy 2.
Everything it does for LCBench is small: encode the task id through ``encoding.json``, lay the
numeric parameters out in the order the model was trained on, run ``model.onnx`` and name the
outputs. Doing that here lets the surrogate share an environment with numpy 2 and a current pyarrow.
The range check uses ``config_space.json``, the file yahpo-gym validates against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# As yahpo_gym/benchmarks/lcbench.py declares them: the model's input columns and output order.
CONT_NAMES = ("epoch", "batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
Y_NAMES = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy",
           "test_balanced_accuracy")
INSTANCE_PARAM = "OpenML_task_id"


class SurrogateError(ValueError):
    """A query the surrogate cannot answer; the message names the parameter and its range."""


@dataclass(frozen=True)
class _Bound:
    low: float
    high: float
    integer: bool


class LCBenchSurrogate:
    """One ONNX session answering LCBench queries for one instance."""

    def __init__(self, lcbench_dir: Path, instance: str, *, noisy: bool = False) -> None:
        import numpy as np
        import onnxruntime as rt

        self._np = np
        self._rt = rt
        encoding = json.loads((lcbench_dir / "encoding.json").read_text())[INSTANCE_PARAM]
        if instance not in encoding:
            raise SurrogateError(f"{INSTANCE_PARAM}={instance!r} is not in {lcbench_dir / 'encoding.json'}")
        self.instance = instance
        self._instance_code = np.array([[encoding[instance]]], dtype=np.int32)
        self._bounds = _read_bounds(lcbench_dir / "config_space.json")
        model = lcbench_dir / ("model_noisy.onnx" if noisy else "model.onnx")
        if not model.is_file():
            raise FileNotFoundError(model)
        opts = rt.SessionOptions()
        # Many trials share a couple of cores; ONNX's default thread pool would oversubscribe them.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = rt.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        self._cat_input, self._cont_input = inputs[0].name, inputs[1].name
        self._output = self._session.get_outputs()[0].name

    def query(self, config: Mapping[str, Any], seed: int | None = None) -> dict[str, float]:
        """The surrogate's prediction for ``config`` (which must hold ``epoch`` and every numeric parameter)."""
        row = []
        for name in CONT_NAMES:
            if name not in config:
                raise SurrogateError(f"{name} is missing")
            value = float(config[name])
            bound = self._bounds[name]
            if not bound.low <= value <= bound.high:
                raise SurrogateError(f"{name}={config[name]!r} is outside [{bound.low!r}, {bound.high!r}]")
            row.append(value)
        if seed is not None:
            self._rt.set_seed(seed)  # only the noisy model draws anything
        x_cont = self._np.array([row], dtype=self._np.float32)
        out = self._session.run([self._output], {self._cat_input: self._instance_code, self._cont_input: x_cont})[0][0]
        return {name: float(v) for name, v in zip(Y_NAMES, out)}


def _read_bounds(path: Path) -> dict[str, _Bound]:
    bounds: dict[str, _Bound] = {}
    for hp in json.loads(path.read_text())["hyperparameters"]:
        if hp["type"] in ("uniform_int", "uniform_float"):
            bounds[hp["name"]] = _Bound(float(hp["lower"]), float(hp["upper"]), hp["type"] == "uniform_int")
    missing = set(CONT_NAMES) - set(bounds)
    if missing:
        raise SurrogateError(f"{path} lacks bounds for {sorted(missing)}")
    return bounds

"""A tiny ONNX model with a Piper voice's inputs and outputs, saved with its config as Piper's releases ship them
(`voice.onnx` and `voice.onnx.json`), for tests that load it through the real loading code (nothing downloaded).

Inputs as every Piper voice: `input` (phoneme ids, int64 [1, N]), `input_lengths` (int64 [1]), `scales` (float32
[3]: noise, length, noise_w). Outputs: the audio (float32 [1, 1, T]) and each phoneme id's duration in frames of
`hop_length` samples (float32 [1, N]), the output piper-tts reads alignments from. The "voice" is a 200 Hz tone:
each id lasts 3 + id % 4 frames, so durations differ from phoneme to phoneme and can be checked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RATE, HOP = 22050, 256


def frames_of(phoneme_id: int) -> int:
    return 3 + phoneme_id % 4


def make_tiny_piper_voice(folder: Path, *, language: str = "en-us", name: str = "tiny.onnx",
                          inputs: tuple[str, ...] = ("input", "input_lengths", "scales")) -> Path:
    import onnx
    from onnx import TensorProto, helper
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    def const(name: str, value, dtype=TensorProto.FLOAT):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", dtype, [], [value]))

    first = inputs[0]
    nodes = [
        const("four", 4, TensorProto.INT64), const("three", 3.0), const("hop", float(HOP)),
        const("zero", 0, TensorProto.INT64), const("one", 1, TensorProto.INT64),
        const("omega", 2 * math.pi * 200 / RATE), const("gain", 0.3),
        helper.make_node("Mod", [first, "four"], ["idmod"]),
        helper.make_node("Cast", ["idmod"], ["idmodf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["idmodf", "three"], ["durations"]),
        helper.make_node("ReduceSum", ["durations"], ["frames"], keepdims=0),
        helper.make_node("Mul", ["frames", "hop"], ["samplesf"]),
        helper.make_node("Cast", ["samplesf"], ["samples"], to=TensorProto.INT64),
        helper.make_node("Range", ["zero", "samples", "one"], ["t"]),
        helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["tf", "omega"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["wave"]),
        helper.make_node("Mul", ["wave", "gain"], ["loud"]),
        helper.make_node("Constant", [], ["zero_one"], value=helper.make_tensor("zo", TensorProto.INT64, [2], [0, 1])),
        helper.make_node("Unsqueeze", ["loud", "zero_one"], ["output"]),
    ]
    graph_inputs = {
        "input": helper.make_tensor_value_info("input", TensorProto.INT64, [1, "n"]),
        "input_lengths": helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        "scales": helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        "tokens": helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "n"]),
    }
    graph = helper.make_graph(
        nodes, "tiny_piper", [graph_inputs[i] for i in inputs],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "t"]),
         helper.make_tensor_value_info("durations", TensorProto.FLOAT, [1, "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save(model, str(path))
    Path(f"{path}.json").write_text(json.dumps({
        "audio": {"sample_rate": RATE}, "espeak": {"voice": language}, "phoneme_type": "espeak",
        "num_symbols": 256, "num_speakers": 1, "hop_length": HOP,
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_id_map": {k: list(v) for k, v in DEFAULT_PHONEME_ID_MAP.items()}, "piper_version": "1.0.0"}))
    return path

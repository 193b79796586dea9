"""A TF1 checkpoint's own graph, run as its author built it: the reference every port is proven
against (conversion environment only: needs TensorFlow, never gtag's or training's dependencies).

The full ``.meta`` graph of musicnn's checkpoints no longer imports in TensorFlow 2 (stale gradient
shapes), so only the forward part that feeds the wanted outputs is cut out, and each variable in it
is frozen to a constant: the checkpoint's value, or a given one (synthetic weights for fixtures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def bn_variables(tf_name: str, torch_name: str) -> list[tuple[str, str, str]]:
    """The four variables of a TF1 ``batch_normalization`` layer mapped onto a torch BatchNorm's
    parameters: ``(tf variable, torch parameter, "id")`` (no rearranging needed)."""
    return [(f"{tf_name}/gamma", f"{torch_name}.weight", "id"), (f"{tf_name}/beta", f"{torch_name}.bias", "id"),
            (f"{tf_name}/moving_mean", f"{torch_name}.running_mean", "id"),
            (f"{tf_name}/moving_variance", f"{torch_name}.running_var", "id")]


def run_meta_graph(prefix: str | Path, outputs: dict[str, str], patches: np.ndarray,
                   variables: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """``outputs`` (``{name: graph node}``) of the checkpoint at ``prefix`` (its files are
    ``<prefix>.meta``, ``.index``, ...) on ``patches`` ``(n, 187, 96)``, run with ``is_training``
    False; variables frozen to the checkpoint's values, or to ``variables`` when given. float32."""
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2, graph_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.python.training import py_checkpoint_reader

    prefix = str(prefix)
    if Path(prefix).is_dir() and not prefix.endswith("/"):
        prefix += "/"  # musicnn's files have an empty stem: the folder itself is the prefix
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(Path(prefix + ".meta").read_bytes())
    sub = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def, list(outputs.values()))
    reader = py_checkpoint_reader.NewCheckpointReader(prefix)
    frozen = graph_pb2.GraphDef()
    for node in sub.node:
        new = frozen.node.add()
        if node.op in ("VariableV2", "Variable"):
            value = variables[node.name] if variables is not None else reader.get_tensor(node.name)
            new.name, new.op = node.name, "Const"
            new.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=tf.as_dtype(value.dtype).as_datatype_enum))
            new.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(value)))
        else:
            new.CopyFrom(node)
            new.device = ""
            if "_output_shapes" in new.attr:
                del new.attr["_output_shapes"]
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(frozen, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        got = sess.run({k: f"{v}:0" for k, v in outputs.items()},
                       feed_dict={"model/Placeholder:0": np.asarray(patches, np.float32),
                                  "model/Placeholder_2:0": False})
    return {k: np.asarray(v, dtype=np.float32) for k, v in got.items()}

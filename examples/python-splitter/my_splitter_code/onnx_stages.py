"""The cut: a decoder ONNX model into pipeline stages by layer ranges — a port of Blockmesh's built-in splitter
(agent/splitter/onnx-split.ts), so that one model cut by either gives the same layer ranges and the same stage graphs.

Works on the generated models and on Hugging Face optimum-style exports whose node names carry the layer index
(``/h.3/…``, ``/transformer/h.3/…``, ``/model/layers.3/…``, ``/block.3/…``). Each stage is a self-contained ONNX model
(the stage IO contract of agent/executor/stage-io.ts):

* stage 0:       input_ids, attention_mask, position_ids, its past KV → hidden_states_out, its present KV
* middle stages: hidden_states, attention_mask (…), its past KV      → hidden_states_out, its present KV
* last stage:    hidden_states, attention_mask (…), its past KV      → logits, its present KV

plus, where the model gives them, its layers' step keys and values (present.N.key_step / value_step).

Nodes shared by all layers (the attention mask) are copied into every stage that needs them; where they read
input_ids only for its shape, a later stage reads the shape of hidden_states instead (same [batch, seq] prefix).

Layers are balanced over the stages by the parameter bytes a decode step reads (an embedding table read by a Gather
costs nothing, a tied LM head counts where its MatMul reads it), divided by each stage's capacity weight: the
assignment minimises the largest stage cost (dynamic programming over contiguous ranges).

Everything here is a pure function over ``onnx.ModelProto`` except :func:`verify_split`, which runs the stages with
ONNX Runtime (imported only there). As a program::

    python -m my_splitter_code.onnx_stages MODEL.onnx N OUTDIR [--capacity 1,2] [--verify]

writes the stage files to OUTDIR and prints the stages as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import onnx
from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto, helper

__all__ = [
    "HIDDEN_IN", "HIDDEN_OUT", "SplitError", "GraphIndex", "StageModel", "SplitStage", "SplitOutput", "Verification",
    "layer_of_node", "index_graph", "parameter_bytes", "balance_layers", "hidden_size_of", "build_stages",
    "split_decoder", "split_model", "verify_split", "byte_prompt", "DEFAULT_VERIFY_PROMPT",
]

#: the stage IO contract (agent/executor/stage-io.ts): what a stage after the first reads, and every stage but the last writes
HIDDEN_IN = "hidden_states"
HIDDEN_OUT = "hidden_states_out"

#: the prompt the built-in splitter verifies with (agent/splitter/program.ts)
DEFAULT_VERIFY_PROMPT = "The harbour town woke before the sun."


class SplitError(Exception):
    """The model cannot be cut as asked (no layer index in node names, world size out of range, a stage that would
    need input_ids beyond its shape, ...)."""

    code = "split_failed"


_LAYER_PATTERNS = [re.compile(r"(?:^|/)h\.(\d+)/"), re.compile(r"/layers\.(\d+)/"), re.compile(r"/block\.(\d+)/")]
_PRESENT = re.compile(r"present\.(\d+)\.")

Where = Union[int, Literal["pre", "post"]]


def layer_of_node(name: str) -> int | None:
    """The layer index a node's name carries (``/h.3/``, ``/layers.3/``, ``/block.3/``), or None."""
    for pattern in _LAYER_PATTERNS:
        m = pattern.search(name)
        if m is not None:
            return int(m.group(1))
    return None


def _tensor_bytes(t: TensorProto) -> int:
    # As the TS splitter counts a tensor: the length of its raw data. (There a decoded TensorProto always has a
    # rawData — empty when the values are in typed fields such as float_data, or in external data — so its fallback
    # of elements × 4|8 bytes never applies; a tensor without raw data counts 0 in both.)
    return len(t.raw_data)


@dataclass
class GraphIndex:
    """A model's graph with, for each node, the layer it belongs to ("pre": before any layer, e.g. the attention mask
    and the embeddings; "post": after one, e.g. the final norm and the LM head)."""

    model: ModelProto
    nodes: Sequence[NodeProto]
    #: tensor name → index of the node that produces it
    producer: dict[str, int]
    initializers: dict[str, TensorProto]
    inputs: dict[str, ValueInfoProto]
    outputs: dict[str, ValueInfoProto]
    layer_of: list[Where]
    layers: int


def index_graph(model: ModelProto) -> GraphIndex:
    """Indexes a model's graph; raises SplitError when its node names carry no layer index."""
    if not model.HasField("graph"):
        raise SplitError("the model has no graph")
    g = model.graph
    nodes = g.node
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producer[o] = i
    initializers = {t.name: t for t in g.initializer}
    inputs = {v.name: v for v in g.input}
    outputs = {v.name: v for v in g.output}
    explicit = [layer_of_node(n.name) for n in nodes]
    layers = 0
    for layer in explicit:
        if layer is not None:
            layers = max(layers, layer + 1)
    if layers == 0:
        raise SplitError("no layers found: node names carry no layer index (/h.N/, /layers.N/, /block.N/)")
    # a node outside any layer is "post" when it depends on a layer, else "pre"
    depends_on_layer = [False] * len(nodes)
    layer_of: list[Where] = []
    for i, n in enumerate(nodes):
        own = explicit[i]
        from_layer = False
        for t in n.input:
            p = producer.get(t)
            if p is not None and p < i and (explicit[p] is not None or depends_on_layer[p]):
                from_layer = True
                break
        depends_on_layer[i] = own is not None or from_layer
        layer_of.append(own if own is not None else ("post" if from_layer else "pre"))
    return GraphIndex(model, nodes, producer, initializers, inputs, outputs, layer_of, layers)


@dataclass
class ParameterBytes:
    per_layer: list[int]
    pre: int
    post: int


def parameter_bytes(ix: GraphIndex, per_step: bool = False) -> ParameterBytes:
    """Parameter bytes per layer, before the first layer (embeddings) and after the last (final norm, LM head);
    tensors under 64 bytes (constants) are left out. With ``per_step``, the bytes a decode step reads instead: a
    gather's table (Gather's data, GatherBlockQuantized's codes and scales) is read one row per token, so it counts
    nothing there, and a table the LM head shares with the embedding counts where the head's MatMul reads it."""
    per_layer = [0] * ix.layers
    pre = 0
    post = 0
    counted: set[str] = set()
    for i, n in enumerate(ix.nodes):
        for k, t in enumerate(n.input):
            init = ix.initializers.get(t)
            if init is None or t in counted or _tensor_bytes(init) < 64:
                continue
            if per_step and n.op_type in ("Gather", "GatherBlockQuantized") and k != 1:
                continue
            counted.add(t)
            where = ix.layer_of[i]
            if where == "pre":
                pre += _tensor_bytes(init)
            elif where == "post":
                post += _tensor_bytes(init)
            else:
                per_layer[where] += _tensor_bytes(init)
    return ParameterBytes(per_layer, pre, post)


def balance_layers(nbytes: ParameterBytes, world_size: int, weights: Sequence[float] | None = None) -> list[tuple[int, int]]:
    """Contiguous layer ranges ``[(start, end), ...]``, one per stage, minimising the largest stage cost: its layers'
    bytes (plus the "pre" bytes on the first stage and the "post" bytes on the last) divided by its weight."""
    n_layers = len(nbytes.per_layer)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise SplitError("world_size must be a positive integer")
    if world_size > n_layers:
        raise SplitError(f"world_size {world_size} exceeds the model's {n_layers} layers")
    w: list[float] = list(weights) if weights is not None else [1] * world_size
    if len(w) != world_size or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 for x in w):
        raise SplitError("capacity weights must be one positive number per stage")
    prefix = [0]
    for b in nbytes.per_layer:
        prefix.append(prefix[-1] + b)

    def cost(s: int, a: int, b: int) -> float:
        return (prefix[b] - prefix[a] + (nbytes.pre if s == 0 else 0) + (nbytes.post if s == world_size - 1 else 0)) / w[s]

    inf = float("inf")
    # best[s][i]: minimal max cost placing layers [0, i) on stages [0, s]
    best = [[inf] * (n_layers + 1) for _ in range(world_size)]
    cut = [[0] * (n_layers + 1) for _ in range(world_size)]
    for i in range(1, n_layers + 1):
        best[0][i] = cost(0, 0, i)
    for s in range(1, world_size):
        for i in range(s + 1, n_layers + 1):
            for j in range(s, i):
                c = max(best[s - 1][j], cost(s, j, i))
                if c < best[s][i]:
                    best[s][i] = c
                    cut[s][i] = j
    ranges: list[tuple[int, int]] = []
    end = n_layers
    for s in range(world_size - 1, -1, -1):
        start = 0 if s == 0 else cut[s][end]
        ranges.insert(0, (start, end))
        end = start
    return ranges


def _boundary_tensor(ix: GraphIndex, k: int) -> str:
    """The residual-stream tensor entering layer k ≥ 1: produced by layer k - 1, read by layer k."""
    candidates: dict[str, None] = {}  # insertion-ordered set
    for i, n in enumerate(ix.nodes):
        if ix.layer_of[i] != k:
            continue
        for t in n.input:
            p = ix.producer.get(t)
            if p is not None and ix.layer_of[p] == k - 1:
                candidates[t] = None
    if len(candidates) != 1:
        raise SplitError(f"cannot find the hidden state entering layer {k} (candidates: {', '.join(candidates) or 'none'})")
    return next(iter(candidates))


def hidden_size_of(ix: GraphIndex) -> int | str:
    """The width of the residual stream: the converter's ``blockmesh.hidden_size``, else the token embedding table's
    second dimension (the initializer a Gather reads with input_ids), else the symbolic ``hidden_size``."""
    for p in ix.model.metadata_props:
        if p.key == "blockmesh.hidden_size":
            try:
                declared = float(p.value)
            except ValueError:
                declared = float("nan")
            if declared.is_integer() and declared > 0:
                return int(declared)
            break
    for n in ix.nodes:
        if n.op_type != "Gather" or len(n.input) < 2 or n.input[1] != "input_ids":
            continue
        table = ix.initializers.get(n.input[0])
        if table is not None and len(table.dims) == 2:
            return int(table.dims[1])
    return "hidden_size"


@dataclass
class StageModel:
    index: int
    #: layers [start, end)
    layers: tuple[int, int]
    model: ModelProto
    inputs: list[str]
    outputs: list[str]
    #: bytes of the stage's initializers of 64 bytes or more
    parameter_bytes: int


def _rename(nodes: list[NodeProto], old: str, new: str) -> None:
    for n in nodes:
        for i, t in enumerate(n.input):
            if t == old:
                n.input[i] = new
        for i, t in enumerate(n.output):
            if t == old:
                n.output[i] = new


def build_stages(model: ModelProto, ranges: Sequence[tuple[int, int]]) -> list[StageModel]:
    """The stage models of a decoder for the given layer ranges."""
    ix = index_graph(model)
    hidden_size = hidden_size_of(ix)
    world = len(ranges)
    g = model.graph

    def present_of(name: str) -> int | None:
        m = _PRESENT.search(name)
        return None if m is None else int(m.group(1))

    stages: list[StageModel] = []
    for s in range(world):
        a, b = ranges[s]
        last = s == world - 1
        hidden_in = _boundary_tensor(ix, a) if s > 0 else None
        hidden_out = None if last else _boundary_tensor(ix, b)
        wanted: list[str] = []
        for o in g.output:
            layer = present_of(o.name)
            if (a <= layer < b) if layer is not None else last:
                wanted.append(o.name)
        if hidden_out is not None:
            wanted.insert(0, hidden_out)
        # backward slice from the wanted outputs, stopping at graph inputs, initializers and the cut
        keep: set[int] = set()
        stack = list(wanted)
        seen: set[str] = set()
        while stack:
            t = stack.pop()
            if t in seen or t == hidden_in or t == "":
                continue
            seen.add(t)
            p = ix.producer.get(t)
            if p is None or p in keep:
                continue
            keep.add(p)
            stack.extend(ix.nodes[p].input)
        nodes: list[NodeProto] = []
        for i in sorted(keep):
            n = NodeProto()
            n.CopyFrom(ix.nodes[i])
            nodes.append(n)
        used = {t for n in nodes for t in n.input}
        if s > 0 and "input_ids" in used:
            readers = [n for n in nodes if "input_ids" in n.input]
            if any(n.op_type != "Shape" for n in readers):
                raise SplitError(f"stage {s} needs input_ids beyond its shape ({', '.join(n.name for n in readers)})")
            for n in nodes:
                if n.op_type == "Shape" and "input_ids" in n.input:
                    del n.input[:]
                    n.input.append(hidden_in)  # s > 0: the hidden state entering the stage
        if hidden_in is not None:
            _rename(nodes, hidden_in, HIDDEN_IN)
        if hidden_out is not None:
            _rename(nodes, hidden_out, HIDDEN_OUT)
        reads = {t for n in nodes for t in n.input}
        inputs: list[ValueInfoProto] = []
        hidden_shape = ["batch_size", "sequence_length", hidden_size]
        if hidden_in is not None:
            inputs.append(helper.make_tensor_value_info(HIDDEN_IN, TensorProto.FLOAT, hidden_shape))
        inputs.extend(v for v in g.input if v.name in reads)
        outputs: list[ValueInfoProto] = []
        if hidden_out is not None:
            outputs.append(helper.make_tensor_value_info(HIDDEN_OUT, TensorProto.FLOAT, hidden_shape))
        outputs.extend(o for o in g.output if o.name in wanted)
        inits = [t for t in g.initializer if t.name in reads]
        param_bytes = sum(_tensor_bytes(t) for t in inits if _tensor_bytes(t) >= 64)

        stage = ModelProto()
        stage.ir_version = model.ir_version
        stage.producer_name = "blockmesh-splitter"
        stage.producer_version = "1"
        stage.domain = model.domain
        stage.model_version = model.model_version
        stage.doc_string = f"stage {s + 1} of {world}: layers {a}..{b - 1}"
        stage.opset_import.extend(model.opset_import)
        for p in model.metadata_props:
            if p.key != "blockmesh.stage":
                stage.metadata_props.add().CopyFrom(p)
        marker = stage.metadata_props.add()
        marker.key = "blockmesh.stage"
        marker.value = json.dumps({"index": s, "worldSize": world, "layers": [a, b]}, separators=(",", ":"))
        sg = stage.graph
        sg.name = f"{g.name}-stage-{s}"
        sg.node.extend(nodes)
        sg.initializer.extend(inits)
        sg.input.extend(inputs)
        sg.output.extend(outputs)
        stages.append(StageModel(s, (a, b), stage, [v.name for v in inputs], [v.name for v in outputs], param_bytes))
    return stages


@dataclass
class SplitStage(StageModel):
    data: bytes = b""
    md5: str = ""


@dataclass
class SplitOutput:
    stages: list[SplitStage]
    ranges: list[tuple[int, int]]
    layers: int


def split_model(model: ModelProto, world_size: int, weights: Sequence[float] | None = None) -> SplitOutput:
    """Balances and cuts a decoded model, and encodes the stages (with their MD5s)."""
    ix = index_graph(model)
    # balanced by what a decode step reads on each stage (weight-bound decode), not by bytes stored
    ranges = balance_layers(parameter_bytes(ix, per_step=True), world_size, weights)
    out: list[SplitStage] = []
    for st in build_stages(model, ranges):
        data = st.model.SerializeToString()
        out.append(SplitStage(st.index, st.layers, st.model, st.inputs, st.outputs, st.parameter_bytes,
                              data=data, md5=hashlib.md5(data, usedforsecurity=False).hexdigest()))
    return SplitOutput(out, ranges, ix.layers)


def split_decoder(model_bytes: bytes, world_size: int, weights: Sequence[float] | None = None) -> SplitOutput:
    """Decodes, balances, cuts and encodes: the whole split of a model file's bytes (external data is not loaded:
    a model must keep its weights inside the file, as for the TS splitter)."""
    return split_model(onnx.load_model_from_string(model_bytes), world_size, weights)


# --- verification: the stages chained against the whole model, with ONNX Runtime (agent/splitter/verify.ts) ---

@dataclass
class Verification:
    #: max |stage chain − whole model| over the prompt's logits (prefill)
    maxAbsDiff: float
    #: the same over the logits of ``decodeSteps`` greedy steps with KV caches
    decodeMaxAbsDiff: float
    promptTokens: int
    decodeSteps: int
    #: greedy tokens agree step by step
    greedyEqual: bool

    def to_json(self) -> dict[str, Any]:
        return {"maxAbsDiff": self.maxAbsDiff, "decodeMaxAbsDiff": self.decodeMaxAbsDiff, "promptTokens": self.promptTokens,
                "decodeSteps": self.decodeSteps, "greedyEqual": self.greedyEqual}


BOS = 256


def byte_prompt(text: str) -> list[int]:
    """The byte tokenizer's ids of ``text`` with BOS first (agent/model/tokenizer.ts ByteTokenizer.encode(text, {bos: true}))."""
    return [BOS, *text.encode("utf-8")]


_PAST_KEY = re.compile(r"^past_key_values\.(\d+)\.key$")


@dataclass
class _StageShape:
    layers: list[int]
    heads: int
    head_dim: int
    first: bool
    last: bool
    inputs: list[str] = field(default_factory=list)


def _stage_shape(sess: Any) -> _StageShape:
    meta = sess.get_inputs()
    names = [m.name for m in meta]
    layers = [int(m.group(1)) for m in (_PAST_KEY.match(n) for n in names) if m is not None]
    k = next((m for m in meta if _PAST_KEY.match(m.name)), None)
    heads = k.shape[1] if k is not None else None
    head_dim = k.shape[3] if k is not None else None
    if not isinstance(heads, int) or not isinstance(head_dim, int):
        raise ValueError("stage has no KV cache inputs of shape [batch, heads, past, head_dim]")
    return _StageShape(layers, heads, head_dim, "input_ids" in names, "logits" in [o.name for o in sess.get_outputs()], names)


def verify_split(whole: bytes | str, stages: Sequence[bytes | str], prompt: Sequence[int], decode_steps: int = 4) -> Verification:
    """Runs the stages chained in-process and the whole model on the same prompt (prefill, then greedy decode steps
    with KV caches) on ONNX Runtime's CPU provider and reports how far their logits are apart: verify.ts's
    ``verifySplit`` in Python. One difference: the greedy token is always taken from the last position's logits, also
    for models that output only that position (the converter's), where verify.ts reads an empty row and takes token 0.
    A feed the whole model does not declare (attention_mask, position_ids) is left out rather than refused."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    whole_sess = ort.InferenceSession(whole, opts, providers=providers)
    parts = [ort.InferenceSession(s, opts, providers=providers) for s in stages]

    w_inputs = {m.name: m for m in whole_sess.get_inputs()}
    k0 = w_inputs.get("past_key_values.0.key")
    logits_meta = next((o for o in whole_sess.get_outputs() if o.name == "logits"), None)
    n_layers = sum(1 for n in w_inputs if _PAST_KEY.match(n))
    heads = k0.shape[1] if k0 is not None else None
    head_dim = k0.shape[3] if k0 is not None else None
    vocab = logits_meta.shape[2] if logits_meta is not None else None
    if n_layers == 0 or not isinstance(heads, int) or not isinstance(head_dim, int) or not isinstance(vocab, int):
        raise ValueError("not a decoder with a KV cache: expected inputs past_key_values.N.key of shape "
                         "[batch, heads, past, head_dim] and logits [batch, seq, vocab]")
    w_out_names = [o.name for o in whole_sess.get_outputs()]
    shapes = [_stage_shape(p) for p in parts]
    part_out_names = [[o.name for o in p.get_outputs()] for p in parts]

    def empty() -> Any:
        return np.zeros((1, heads, 0, head_dim), dtype=np.float32)

    def ids(values: Sequence[int]) -> Any:
        return np.asarray([list(values)], dtype=np.int64)

    def run_whole(tokens: Sequence[int], past_len: int, past: dict[str, Any]) -> dict[str, Any]:
        s = len(tokens)
        feeds = {"input_ids": ids(tokens), "attention_mask": ids([1] * (past_len + s)),
                 "position_ids": ids([past_len + i for i in range(s)]), **past}
        out = whole_sess.run(w_out_names, {k: v for k, v in feeds.items() if k in w_inputs})
        return dict(zip(w_out_names, out, strict=True))

    def present_as_past(out: dict[str, Any], layers: Sequence[int]) -> dict[str, Any]:
        past: dict[str, Any] = {}
        for layer in layers:
            past[f"past_key_values.{layer}.key"] = out[f"present.{layer}.key"]
            past[f"past_key_values.{layer}.value"] = out[f"present.{layer}.value"]
        return past

    pasts: list[dict[str, Any] | None] = [None] * len(parts)

    def run_chain(tokens: Sequence[int], past_len: int) -> Any:
        hidden: Any = None
        logits: Any = None
        for i, part in enumerate(parts):
            sh = shapes[i]
            s = len(tokens) if sh.first else hidden.shape[1]
            feeds: dict[str, Any] = {}
            if sh.first:
                feeds["input_ids"] = ids(tokens)
            else:
                feeds[HIDDEN_IN] = hidden
            if "attention_mask" in sh.inputs:
                feeds["attention_mask"] = ids([1] * (past_len + s))
            if "position_ids" in sh.inputs:
                feeds["position_ids"] = ids([past_len + j for j in range(s)])
            past = pasts[i]
            for layer in sh.layers:
                for kind in ("key", "value"):
                    name = f"past_key_values.{layer}.{kind}"
                    feeds[name] = past[name] if past is not None else empty()
            out = dict(zip(part_out_names[i], part.run(part_out_names[i], feeds), strict=True))
            pasts[i] = present_as_past(out, sh.layers)
            if sh.last:
                logits = out["logits"]
            else:
                hidden = out[HIDDEN_OUT]
        return logits

    def max_diff(x: Any, y: Any) -> float:
        if x.size != y.size:
            return float("inf")
        if x.size == 0:
            return 0.0
        return float(np.max(np.abs(x.astype(np.float64).ravel() - y.astype(np.float64).ravel())))

    whole_past = {}
    for layer in range(n_layers):
        whole_past[f"past_key_values.{layer}.key"] = empty()
        whole_past[f"past_key_values.{layer}.value"] = empty()
    whole_out = run_whole(prompt, 0, whole_past)
    chain_logits = run_chain(prompt, 0)
    max_abs = max_diff(whole_out["logits"], chain_logits)
    decode_max = 0.0
    greedy_equal = True
    pos = len(prompt)
    # the next token: argmax of the last position's row. (Models that give logits for every position give the prompt's
    # last row here, as verify.ts takes it; the converter's models give only the last position's, [batch, 1, vocab],
    # where verify.ts's offset of (prompt length - 1) rows finds nothing and its argmax says 0.)
    tok_w = int(np.argmax(whole_out["logits"].reshape(-1, vocab)[-1]))
    tok_c = int(np.argmax(chain_logits.reshape(-1, vocab)[-1]))
    for _ in range(decode_steps):
        if tok_w != tok_c:
            greedy_equal = False
        whole_out = run_whole([tok_w], pos, present_as_past(whole_out, range(n_layers)))
        chain_logits = run_chain([tok_w], pos)
        decode_max = max(decode_max, max_diff(whole_out["logits"], chain_logits))
        tok_w = int(np.argmax(whole_out["logits"].reshape(-1, vocab)[-1]))
        tok_c = int(np.argmax(chain_logits.reshape(-1, vocab)[-1]))
        pos += 1
    if tok_w != tok_c:
        greedy_equal = False
    return Verification(max_abs, decode_max, len(prompt), decode_steps, greedy_equal)


# --- the program: python -m my_splitter_code.onnx_stages MODEL.onnx N OUTDIR [--capacity 1,2] [--verify] ---

def _weights(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m my_splitter_code.onnx_stages",
                                 description="Cut a decoder ONNX model into N pipeline stages; print the stages as JSON.")
    ap.add_argument("model", help="the whole model (.onnx)")
    ap.add_argument("world_size", type=int, help="how many stages")
    ap.add_argument("outdir", help="where the stage files go")
    ap.add_argument("--capacity", type=_weights, default=None, help="capacity weights, one per stage (e.g. 1,2)")
    ap.add_argument("--verify", action="store_true", help="also run the stages chained against the whole model (ONNX Runtime)")
    ap.add_argument("--prompt", default=DEFAULT_VERIFY_PROMPT, help="the verification prompt (byte tokenizer, BOS first)")
    args = ap.parse_args(argv)
    with open(args.model, "rb") as f:
        whole = f.read()
    try:
        split = split_decoder(whole, args.world_size, args.capacity)
    except SplitError as err:
        print(json.dumps({"error": str(err), "code": err.code}))
        return 1
    os.makedirs(args.outdir, exist_ok=True)
    base = os.path.splitext(os.path.basename(args.model))[0]
    stages = []
    for st in split.stages:
        path = os.path.abspath(os.path.join(args.outdir, f"{base}-stage-{st.index}-of-{args.world_size}.onnx"))
        with open(path, "wb") as f:
            f.write(st.data)
        stages.append({"index": st.index, "layers": list(st.layers), "path": path, "md5": st.md5, "size_bytes": len(st.data),
                       "parameter_bytes": st.parameter_bytes, "inputs": st.inputs, "outputs": st.outputs})
    result: dict[str, Any] = {"layers": split.layers, "ranges": [list(r) for r in split.ranges], "stages": stages}
    if args.verify:
        result["verification"] = verify_split(whole, [st.data for st in split.stages], byte_prompt(args.prompt), 4).to_json()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

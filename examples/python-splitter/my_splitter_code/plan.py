"""The model plan a split task reports (seed 002's "model plan"): one component and one block spec per stage, and the
vDAG that chains them — a port of agent/splitter/plan.ts (buildPlan), with the same structure and field names, so
that an agent's ``POST /api/vdags/deploy {"task_id": ...}`` (deployPlan) takes it as it takes the built-in splitter's.

The component specs follow agent/registry/components.ts (ComponentSpecSchema): runtime ``onnx``, ``model`` {url, md5,
sizeBytes}, ``tokenizer``, ``contextLength``, ``stage`` {index, worldSize, layers, source}, ``resources`` {ram}.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

__all__ = ["PlanStage", "slug_of", "build_plan", "check_tokenizer"]


class PlanStage(TypedDict):
    """One stage of a plan: which layers, which file (by MD5), where it is."""

    rank: int
    layers: list[int]
    model_layer_hash: str
    url: str
    size_bytes: int
    parameter_bytes: int
    inputs: list[str]
    outputs: list[str]


def slug_of(s: str) -> str:
    """A name as a component/block name: lowercase, runs of other characters as "-", starting with a letter or digit,
    at most 40 characters ("model" when nothing is left)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", s.lower())
    slug = re.sub(r"^[^a-z0-9]+", "", slug)[:40]
    return "model" if slug == "" else slug


_MD5 = re.compile(r"^[a-fA-F0-9]{32}$")


def check_tokenizer(t: Any) -> dict[str, Any]:
    """model_split_config.tokenizer as the component schema takes it (TokenizerSchema): ``{"type": "byte"}`` or
    ``{"type": "bundle", "url": URL, "md5": 32 hex digits}`` (md5 lowercased). Raises ValueError naming the fault."""
    if not isinstance(t, Mapping):
        raise ValueError("model_split_config.tokenizer: expected an object")
    kind = t.get("type")
    if kind == "byte":
        extra = sorted(k for k in t if k != "type")
        if extra:
            raise ValueError(f"model_split_config.tokenizer: unrecognized key(s) {', '.join(extra)}")
        return {"type": "byte"}
    if kind == "bundle":
        extra = sorted(k for k in t if k not in ("type", "url", "md5"))
        if extra:
            raise ValueError(f"model_split_config.tokenizer: unrecognized key(s) {', '.join(extra)}")
        url = t.get("url")
        md5 = t.get("md5")
        if not isinstance(url, str) or not 1 <= len(url) <= 4096:
            raise ValueError("model_split_config.tokenizer: url must be a string of 1 to 4096 characters")
        if not isinstance(md5, str) or _MD5.match(md5) is None:
            raise ValueError("model_split_config.tokenizer: md5 must be 32 hex digits")
        return {"type": "bundle", "url": url, "md5": md5.lower()}
    raise ValueError("model_split_config.tokenizer: type must be 'byte' or 'bundle'")


def build_plan(*, model_name: str, source_md5: str, layers: int, stages: Sequence[PlanStage], context_length: int,
               verification: Mapping[str, Any], vdag_name: str | None = None,
               block: Mapping[str, Any] | None = None, tokenizer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Components, blocks and the vDAG for a set of stage files.

    ``block``: extra block-spec fields for every stage block (policy, maxBatch, ...); ``tokenizer``: the source model's
    tokenizer (default: the byte tokenizer of generated models); ``verification``: the stages checked against the
    whole model ({maxAbsDiff, decodeMaxAbsDiff, promptTokens, decodeSteps, greedyEqual})."""
    tok = dict(tokenizer) if tokenizer is not None else {"type": "byte"}
    base = slug_of(model_name)
    world = len(stages)
    vdag = vdag_name if vdag_name is not None else f"{base}-pipeline"
    block_ids = [f"{slug_of(vdag)}-s{s['rank']}" for s in stages]
    components = [{
        "name": f"{base}-s{s['rank']}-of-{world}",
        "version": s["model_layer_hash"][:12],
        "description": f"stage {s['rank'] + 1} of {world} of {model_name} (layers {s['layers'][0]}..{s['layers'][1] - 1})",
        "runtime": "onnx",
        "model": {"url": s["url"], "md5": s["model_layer_hash"], "sizeBytes": s["size_bytes"]},
        "tokenizer": tok,
        "contextLength": context_length,
        "stage": {"index": s["rank"], "worldSize": world, "layers": list(s["layers"]), "source": source_md5},
        "resources": {"ram": math.ceil(s["size_bytes"] * 2)},
    } for s in stages]
    blocks = [{
        **(block or {}),
        "id": block_ids[i],
        "component": f"{components[i]['name']}:{components[i]['version']}",
        # stages go on different peers when the mesh has enough of them
        "avoid": [b for j, b in enumerate(block_ids) if j != i],
    } for i in range(world)]
    return {
        "model_name": model_name,
        "source_md5": source_md5,
        "world_size": world,
        "layers": layers,
        "stages": [dict(s) for s in stages],
        "components": components,
        "blocks": blocks,
        "vdag": {
            "name": vdag,
            "nodes": [{"id": f"s{i}", "block": b} for i, b in enumerate(block_ids)],
            "edges": [{"from": f"s{i}", "to": f"s{i + 1}"} for i in range(len(block_ids) - 1)],
            "contextLength": context_length,
            "tokenizer": tok,
        },
        "verification": dict(verification),
    }

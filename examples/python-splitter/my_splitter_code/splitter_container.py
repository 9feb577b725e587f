"""A Python model splitter on the seed's SDK (aios_model_splitter): Blockmesh's built-in ONNX pipeline splitter
(agent/splitter/program.ts) written in Python with the ``onnx`` package, and verified with ``onnxruntime``.

Run by a split runner with the seed's environment (TASK_ID, TASK_DATA, TASK_STATUS_UPDATE_URL,
MODEL_LAYERS_REGISTRY_URL, BLOCK_DB_URL, TASK_TOKEN, OUTPUT_DIR) through ``my_splitter_entrypoint.py``:

* ``begin()`` finds the model (an absolute path or file:// URL as it is, anything else downloaded into OUTPUT_DIR)
  and hashes it (MD5), checking model_split_config.md5 when given;
* ``main()`` cuts it into ``world_size`` stages (my_splitter_code.onnx_stages), writes them to OUTPUT_DIR and checks
  that the stages chained reproduce the whole model's logits (prefill and greedy decode steps, ONNX Runtime);
* ``finish()`` uploads the stages to S3 when asked, registers each in the model layers registry (its MD5 as the key)
  and returns the result with the model plan (components, blocks, vDAG), also written to OUTPUT_DIR/plan.json.

task_data: model_name, model_download_url, world_size, model_split_config (all optional):
  balance: "params" (default) | "capacity"; capacity: [weights per stage]
  vdag_name, context_length, verify_prompt, tolerance (default 1e-4)
  md5: expected MD5 of the source model
  tokenizer: the source component's tokenizer spec, given to the stage components and the vDAG
  block: extra block-spec fields for the stage blocks (policy, maxBatch, ...)
  s3: {bucket, prefix?, endpoint?, region?, public_url_base?} (credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.parse
import urllib.request
from typing import Any

import onnx
from aios_model_splitter import (
    Context,
    FileDownloader,
    LayerHash,
    ModelLayerClient,
    RegistryError,
    S3Manager,
)

from .onnx_stages import (
    DEFAULT_VERIFY_PROMPT,
    SplitError,
    byte_prompt,
    split_decoder,
    verify_split,
)
from .plan import PlanStage, build_plan, check_tokenizer

StepResult = tuple[bool, Any]


def context_length_of(model_bytes: bytes, configured: Any) -> int:
    """The model's context: model_split_config.context_length, else the generator's metadata (blockmesh.spec's
    maxPositions), else 2048."""
    if isinstance(configured, (int, float)) and not isinstance(configured, bool) and configured > 0:
        return int(configured) if float(configured).is_integer() else configured  # type: ignore[return-value]
    try:
        model = onnx.load_model_from_string(model_bytes)
        for p in model.metadata_props:
            if p.key == "blockmesh.spec":
                positions = json.loads(p.value).get("maxPositions")
                if isinstance(positions, int) and positions > 0:
                    return positions
                break
    except Exception:  # not a generated model
        pass
    return 2048


class MyCustomModelSplitter:
    def __init__(self, context: Context) -> None:
        self.context = context
        raw = context.task_data.get("model_split_config")
        self.config: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self.config_error: str | None = None
        if raw is not None and not isinstance(raw, dict):
            self.config_error = "model_split_config must be a JSON object"

    def _tokenizer(self) -> dict[str, Any] | None:
        """model_split_config.tokenizer, checked as the component schema checks it (None: the byte tokenizer)."""
        t = self.config.get("tokenizer")
        return None if t is None else check_tokenizer(t)

    # --- begin: the model, located or downloaded, and its MD5 ---
    def begin(self) -> StepResult:
        if self.config_error is not None:
            return False, self.config_error
        try:
            self._tokenizer()
        except ValueError as err:
            return False, str(err)
        url = self.context.task_data.get("model_download_url")
        if not isinstance(url, str) or url == "":
            return False, "task_data.model_download_url is required"
        os.makedirs(self.context.output_dir, exist_ok=True)
        source_path = urllib.request.url2pathname(urllib.parse.urlparse(url).path) if url.startswith("file://") else url
        if not os.path.isabs(source_path):
            source_path = os.path.join(self.context.output_dir, "source.onnx")
            self.context.progress(0.05, f"downloading {url}")
            downloader = FileDownloader()
            if not downloader.download(url, source_path):
                return False, downloader.last_error or "download failed"
        md5 = LayerHash().get_hash(source_path)
        if md5 is None:
            return False, f"cannot read the model at {source_path}"
        expected = self.config.get("md5")
        if isinstance(expected, str) and expected.lower() != md5:
            return False, f"model MD5 is {md5}, expected {expected}"
        return True, {"source_path": source_path, "md5": md5}

    # --- main: the cut, the stage files, the verification ---
    def main(self, extra_data: dict[str, Any]) -> StepResult:
        task = self.context.task_data
        world = task.get("world_size")
        if isinstance(world, float) and world.is_integer():
            world = int(world)
        self.context.progress(0.2, f"splitting into {world} stages")
        with open(extra_data["source_path"], "rb") as f:
            whole = f.read()
        weights = self.config.get("capacity") if self.config.get("balance") == "capacity" else None
        if weights is not None and not isinstance(weights, list):
            return False, "capacity weights must be one positive number per stage"
        try:
            split = split_decoder(whole, world, weights)  # type: ignore[arg-type]  # checked by balance_layers
        except SplitError as err:
            return False, str(err)
        stages: list[PlanStage] = []
        for st in split.stages:
            path = os.path.join(self.context.output_dir, f"{task.get('model_name')}-stage-{st.index}-of-{world}.onnx")
            with open(path, "wb") as f:
                f.write(st.data)
            stages.append({"rank": st.index, "layers": list(st.layers), "model_layer_hash": st.md5,
                           "url": pathlib.Path(os.path.abspath(path)).as_uri(), "size_bytes": len(st.data),
                           "parameter_bytes": st.parameter_bytes, "inputs": st.inputs, "outputs": st.outputs})
        self.context.progress(0.6, "verifying: stages chained against the whole model")
        text = self.config.get("verify_prompt")
        prompt = byte_prompt(str(DEFAULT_VERIFY_PROMPT if text is None else text))
        verification = verify_split(whole, [st.data for st in split.stages], prompt, 4)
        configured = self.config.get("tolerance")
        tolerance = 1e-4 if configured is None else float(configured)
        v = verification
        if not (v.maxAbsDiff <= tolerance and v.decodeMaxAbsDiff <= tolerance and v.greedyEqual):
            return False, (f"verification failed: max abs diff {v.maxAbsDiff} (decode {v.decodeMaxAbsDiff}) "
                           f"over tolerance {tolerance}, greedy equal {str(v.greedyEqual).lower()}")
        return True, {**extra_data, "stages": stages, "layers": split.layers,
                      "context_length": context_length_of(whole, self.config.get("context_length")),
                      "verification": verification.to_json()}

    # --- finish: S3 (optional), the plan, the model layers registry ---
    def finish(self, extra_data: dict[str, Any]) -> StepResult:
        task = self.context.task_data
        stages: list[PlanStage] = extra_data["stages"]
        s3 = self.config.get("s3")
        if s3 is not None:
            if not isinstance(s3, dict) or not isinstance(s3.get("bucket"), str):
                return False, "model_split_config.s3 must be an object with a bucket"
            self.context.progress(0.8, f"uploading {len(stages)} stages to s3://{s3['bucket']}")
            manager = S3Manager(os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                                s3.get("region") or "us-east-1", endpoint_url=s3.get("endpoint"))
            for st in stages:
                key = f"{s3.get('prefix') or ''}{st['model_layer_hash']}.onnx"
                local = urllib.request.url2pathname(urllib.parse.urlparse(st["url"]).path)
                if not manager.upload_file(local, s3["bucket"], key):
                    return False, manager.last_error or "upload failed"
                base = s3.get("public_url_base")
                if base is not None:
                    st["url"] = f"{base[:-1] if base.endswith('/') else base}/{key}"
        plan = build_plan(
            model_name=task["model_name"],
            source_md5=extra_data["md5"],
            layers=extra_data["layers"],
            stages=stages,
            context_length=extra_data["context_length"],
            vdag_name=self.config.get("vdag_name"),
            block=self.config.get("block"),
            verification=extra_data["verification"],
            tokenizer=self._tokenizer(),
        )
        self.context.progress(0.9, "registering model layers")
        layers = ModelLayerClient(self.context.model_layers_registry_url, self.context.token)
        for st in stages:
            component = plan["components"][st["rank"]]
            try:
                layers.create_model_layer({
                    "model_layer_hash": st["model_layer_hash"],
                    "model_asset_id": task["model_name"],
                    "model_component_registry_uri": f"{component['name']}:{component['version']}",
                    "model_layer_public_url": st["url"],
                    "model_layer_metadata": [{"layers": st["layers"], "size_bytes": st["size_bytes"],
                                              "parameter_bytes": st["parameter_bytes"], "source_md5": extra_data["md5"]}],
                    "model_layer_rank": st["rank"],
                    "model_world_size": len(stages),
                })
            except RegistryError as err:
                # the same stage registered before (same MD5): it is the same layer, reused
                if err.status != 409:
                    return False, str(err)
        artifact = os.path.join(self.context.output_dir, "plan.json")
        with open(artifact, "w", encoding="utf-8") as f:
            f.write(json.dumps(plan, indent=2) + "\n")
        return True, {
            "status": "done",
            "model_name": task["model_name"],
            "world_size": len(stages),
            "output_dir": self.context.output_dir,
            "artifact": artifact,
            "max_abs_diff": extra_data["verification"]["maxAbsDiff"],
            "plan": plan,
        }

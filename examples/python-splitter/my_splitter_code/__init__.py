"""An example Python model splitter for Blockmesh (issue 17): the built-in ONNX pipeline splitter, ported to Python.

Modules: ``splitter_container`` (MyCustomModelSplitter: the seed's begin / main / finish), ``onnx_stages`` (the cut,
over ``onnx.ModelProto``, and the verification with ONNX Runtime), ``plan`` (the model plan: components, blocks, vDAG).
"""

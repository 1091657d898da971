"""Reads and edits .tflite files; runs nothing.

`schema` owns the flatbuffer schema, enum names, dtype tables and op kinds;
`graph.load_graph` is the one validating reader (building the IR of `ir`
with `parse`, costed by `analysis`); `edit` changes files through the schema's
object API; `validate` checks a parsed graph before any interpreter sees it;
`decode` is TFLite Micro's DECODE format (the PRUNING encoder, reference
decoders, ancillary data) and `decode_compress` chooses and inserts it per
tensor; `strip` removes what a runtime never reads (tensor names, repeated
zero points, unread bias quantization...). Import the module you need:
`from edgesparse.tflite.graph import load_graph`.
Raises `ModelError` for anything that is not a sane .tflite (see each module).
"""

__all__ = ["analysis", "decode", "decode_compress", "edit", "ethos_u", "graph", "ir", "parse", "schema", "strip",
           "validate"]

"""Reads and edits .tflite files; runs nothing.

`schema` owns the flatbuffer schema, enum names, dtype tables and op kinds;
`graph.load_graph` is the one validating reader (building the IR of `ir`
with `parse`, costed by `analysis`); `edit` changes files through the schema's
object API. Import the module you need: `from edgesparse.tflite.graph import load_graph`.
Raises `ModelError` for anything that is not a sane .tflite (see each module).
"""

__all__ = ["analysis", "edit", "graph", "ir", "parse", "schema"]

"""Parse a .tflite flatbuffer into a small graph IR; imports no TensorFlow.

CONTRACT:
    load_graph(source: bytes | Path) -> Graph        # ModelError on truncated / non-flatbuffer input
    Graph: file_bytes, subgraphs, ops, tensors, inputs, outputs, op_types, size (SizeBreakdown)
    SizeBreakdown: weight_bytes, sparse_index_bytes, overhead_bytes, total_bytes
    Op: index, opcode, inputs, outputs, options, macs, bytes_moved
    Tensor: index, name, shape, dtype, buffer_bytes, is_constant, quantization, sparsity
"""

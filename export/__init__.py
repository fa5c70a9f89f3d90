"""Export: the export table (formats.py) and checkpoint -> ONNX (onnx_export.py)."""

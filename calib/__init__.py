"""INT8 calibration (Q/DQ ONNX from the user's own images or video): not built yet."""
